"""One augmenter, two paths: the online path returns exactly what the batch run wrote."""

from __future__ import annotations

import csv

import pyarrow.parquet as pq

from pipelines.engine.inprocess import InProcessEngine
from pipelines.workflows.loader import load_spec
from tests.conftest import SAMPLE_CSV, SAMPLE_SPEC


def test_batch_and_online_outputs_are_identical(sample_run):
    rows = list(csv.DictReader(SAMPLE_CSV.open(encoding="utf-8")))
    online = InProcessEngine(load_spec(SAMPLE_SPEC)).augment(rows)

    batch = sorted(pq.read_table(sample_run.output["path"]).to_pylist(), key=lambda r: r["record_uuid"])
    assert sorted(online.records, key=lambda r: r["record_uuid"]) == batch
    assert len(online.invalid) == sample_run.counts["quarantined"]
    assert len(online.records) + len(online.invalid) == len(rows)


def test_online_reports_each_invalid_record_with_its_reasons():
    workflow = InProcessEngine(load_spec(SAMPLE_SPEC))
    result = workflow.augment([
        {"org_id": "ORG-00001", "name": "Acme Ltd", "email": "info@acme.co.uk", "website": "https://www.acme.co.uk/"},
        {"org_id": "ORG-00002", "name": "", "employees": "lots"},
        "not an object",
        {"org_id": "ORG-00001", "name": "Acme again"},
    ])
    assert [r["org_id"] for r in result.records] == ["ORG-00001"]
    assert result.records[0]["website_domain"] == "acme.co.uk"
    invalid = {item["index"]: item["errors"] for item in result.invalid}
    assert sorted(invalid) == [1, 2, 3]
    assert {e["field"] for e in invalid[1]} == {"name", "employees"}
    assert invalid[2][0]["reason"] == "expected a JSON object, got str"
    assert "first seen at row 1 of request" in invalid[3][0]["reason"]
