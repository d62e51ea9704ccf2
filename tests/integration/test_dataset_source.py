"""Runs over an imported dataset (`source: {kind: dataset}`): record ids kept, versions untouched."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from augment_cli.main import main
from augment_core.storage import filesystem_for
from augment_core.store import open_store
from pipelines.operations.importer import import_dataset
from pipelines.spec.workflow import FileSource
from pipelines.workflows.loader import load_spec
from tests.conftest import ROOT, SAMPLE_CSV, SAMPLE_SPEC
from tests.integration.conftest import run_spec
from tests.integration.test_import import checksums
from tests.integration.test_s3 import BUCKET, s3_endpoint  # noqa: F401 - the moto server fixture


def dataset_workflow(tmp_path: Path, source: dict, sink: str, key: str | list[str] = "org_id") -> Path:
    """The sample workflow reading a catalogued dataset instead of its CSV."""
    data = yaml.safe_load(SAMPLE_SPEC.read_text())
    data["source"] = source
    data["schema"]["key"] = key
    data["sink"] = {"dataset": sink, "export_csv": False}
    for step in data["steps"]:
        if "reference" in step["params"]:
            step["params"]["reference"] = str(ROOT / "configs" / "data" / "country_regions.csv")
    path = tmp_path / f"{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def imported(ray_cluster, settings):
    dataset = f"orgs_in_{uuid.uuid4().hex[:8]}"
    schema = load_spec(SAMPLE_SPEC).schema_
    return import_dataset(settings, FileSource(kind="csv", path=str(SAMPLE_CSV)), dataset, schema)


def test_a_run_augments_an_imported_dataset_and_keeps_its_record_ids(imported, settings, tmp_path):
    before = checksums(imported.path)
    sink = f"orgs_out_{uuid.uuid4().hex[:8]}"
    # A different key in the workflow: the ids still come from the dataset, never recomputed.
    run = run_spec(settings, dataset_workflow(tmp_path, {"kind": "dataset", "name": imported.dataset}, sink,
                                              key=["org_id", "name"]))
    assert run.status == "succeeded", run.error
    assert (run.counts["in"], run.counts["valid"], run.counts["quarantined"]) == (277, 277, 0)
    assert run.output["source"] == {"dataset": imported.dataset, "version": 1}
    assert run.output["dataset"] == sink and run.output["version"] == 1

    source_ids = pq.read_table(imported.path, columns=["record_uuid", "org_id"]).to_pylist()
    output = pq.read_table(run.output["path"])
    assert sorted(map(tuple, (r.values() for r in output.select(["record_uuid", "org_id"]).to_pylist()))) == sorted(
        map(tuple, (r.values() for r in source_ids))
    )
    assert "website_domain" in output.column_names and "region" in output.column_names
    assert checksums(imported.path) == before


def test_a_run_writes_a_new_version_of_the_dataset_it_reads_and_leaves_the_old_one(imported, settings, tmp_path,
                                                                                  capsys):
    dataset = f"orgs_self_{uuid.uuid4().hex[:8]}"
    first = import_dataset(settings, FileSource(kind="csv", path=str(SAMPLE_CSV)), dataset,
                           load_spec(SAMPLE_SPEC).schema_)
    before = checksums(first.path)
    run = run_spec(settings, dataset_workflow(tmp_path, {"kind": "dataset", "name": dataset, "version": 1}, dataset))
    assert run.status == "succeeded", run.error
    assert run.output["version"] == 2 and run.output["path"] != first.path
    assert checksums(first.path) == before

    # v1 pinned by number still reads v1 although v2 is the latest now.
    again = run_spec(settings, dataset_workflow(tmp_path, {"kind": "dataset", "name": dataset, "version": 1},
                                                f"{dataset}_again"))
    assert again.output["source"] == {"dataset": dataset, "version": 1} and again.counts["in"] == 277
    assert checksums(first.path) == before

    assert main(["diff", dataset, "1", "2", "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "added 0 · removed 0 · changed 0 · unchanged 277" in out and "website_domain" in out


def test_a_run_from_a_missing_version_fails_with_the_versions_there_are(imported, settings, tmp_path):
    run = run_spec(settings, dataset_workflow(tmp_path, {"kind": "dataset", "name": imported.dataset, "version": 99},
                                              f"never_{uuid.uuid4().hex[:8]}"))
    assert run.status == "failed"
    assert f"dataset '{imported.dataset}' has no version 99 (versions: 1" in run.error


def test_an_import_and_a_run_on_s3_storage(ray_cluster, settings, s3_endpoint, tmp_path):  # noqa: F811
    s3_settings = settings.model_copy(
        update={"storage_root": f"s3://{BUCKET}/imports-{uuid.uuid4().hex[:8]}", "s3_endpoint_url": s3_endpoint}
    )
    dataset = f"orgs_s3_{uuid.uuid4().hex[:8]}"
    result = import_dataset(s3_settings, FileSource(kind="csv", path=str(SAMPLE_CSV)), dataset,
                            load_spec(SAMPLE_SPEC).schema_)
    assert result.path.startswith("s3://") and (result.valid, result.quarantined) == (277, 23)
    assert open_store(settings).get_dataset_version(dataset, 1).imported_from == str(SAMPLE_CSV)

    run = run_spec(s3_settings, dataset_workflow(tmp_path, {"kind": "dataset", "name": dataset}, f"{dataset}_out"))
    assert run.status == "succeeded", run.error
    fs, path = filesystem_for(result.path, s3_endpoint)
    ids = pq.read_table(path, filesystem=fs, columns=["record_uuid"])["record_uuid"].to_pylist()
    fs, path = filesystem_for(run.output["path"], s3_endpoint)
    assert sorted(pq.read_table(path, filesystem=fs, columns=["record_uuid"])["record_uuid"].to_pylist()) == sorted(ids)
