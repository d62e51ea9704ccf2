"""`augment datasets` and `augment diff`: versions matched by record_uuid, field by field."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augment_cli.main import main
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import open_store
from pipelines.operations.diff import diff_versions


def rid(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"record-{n}"))


def write_version(settings: Settings, dataset: str, version: int, rows: list[dict[str, Any]], files: int = 2) -> str:
    """A version as a run leaves it: Parquet files in a folder, catalogued."""
    path = StoragePaths(settings).dataset_run(dataset, f"test-{uuid.uuid4().hex[:8]}")
    fs, folder = StoragePaths(settings).filesystem(path)
    fs.create_dir(folder, recursive=True)
    table = pa.Table.from_pylist(rows)
    step = max(1, len(rows) // files)
    for i in range(0, len(rows), step):
        pq.write_table(table.slice(i, step), f"{folder}/part-{i}.parquet")
    schema = {f.name: str(f.type) for f in table.schema}
    open_store(settings).add_dataset_version(dataset, version, path, schema, len(rows), "test")
    return path


@pytest.fixture
def two_versions(settings: Settings) -> str:
    dataset = f"diffed_{uuid.uuid4().hex[:8]}"
    before = [{"record_uuid": rid(n), "name": f"Org {n}", "employees": n, "p_provenance": f'{{"run": 1, "n": {n}}}'}
              for n in range(40)]
    after = [dict(r) for r in before if r["record_uuid"] != rid(3)]  # 3 removed
    for r in after:
        r["p_provenance"] = r["p_provenance"].replace('"run": 1', '"run": 2')  # every run differs here
        r["segment"] = "b2b"  # a new column
    after[10]["name"] = "Org 11 Ltd"  # after[10] is record 11 (3 is gone)
    after[20]["employees"] = None
    after.append({"record_uuid": rid(100), "name": "New", "employees": 5, "p_provenance": "{}", "segment": "b2c"})
    write_version(settings, dataset, 1, before)
    write_version(settings, dataset, 2, after, files=3)
    return dataset


def test_diff_counts_every_kind_and_names_each_changed_field(settings: Settings, two_versions: str) -> None:
    store = open_store(settings)
    v1, v2 = (store.get_dataset_version(two_versions, v) for v in (1, 2))
    diff = diff_versions(StoragePaths(settings), two_versions, (1, v1.path), (2, v2.path))
    assert (diff.added, diff.removed, diff.changed, diff.unchanged) == (1, 1, 2, 37)
    assert diff.added_ids == [rid(100)] and diff.removed_ids == [rid(3)]
    assert diff.columns_added == ["segment"] and diff.columns_removed == []
    changes = {c.record_uuid: c.fields for c in diff.changes}
    assert changes == {rid(11): {"name": ("Org 11", "Org 11 Ltd")}, rid(21): {"employees": (21, None)}}
    assert diff.changed_fields == {"name": 1, "employees": 1}


def test_provenance_columns_are_compared_only_when_asked(settings: Settings, two_versions: str) -> None:
    store = open_store(settings)
    v1, v2 = (store.get_dataset_version(two_versions, v) for v in (1, 2))
    diff = diff_versions(StoragePaths(settings), two_versions, (1, v1.path), (2, v2.path), with_provenance=True)
    assert diff.changed == 39 and diff.changed_fields["p_provenance"] == 39


def test_limit_bounds_what_is_listed_not_what_is_counted(settings: Settings, two_versions: str) -> None:
    store = open_store(settings)
    v1, v2 = (store.get_dataset_version(two_versions, v) for v in (1, 2))
    diff = diff_versions(StoragePaths(settings), two_versions, (1, v1.path), (2, v2.path), limit=1,
                         with_provenance=True)
    assert diff.changed == 39 and len(diff.changes) == 1


def test_cli_diff_json_and_text(two_versions: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", two_versions, "1", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"] == {"added": 1, "removed": 1, "changed": 2, "unchanged": 37}
    assert {"record_uuid": rid(11), "fields": {"name": {"before": "Org 11", "after": "Org 11 Ltd"}}} in out["changes"]
    assert main(["diff", two_versions, "1", "2"]) == 0
    text = capsys.readouterr().out
    assert "added 1 · removed 1 · changed 2 · unchanged 37" in text
    assert "name: 'Org 11' -> 'Org 11 Ltd'" in text and f"- {rid(3)}" in text and f"+ {rid(100)}" in text


def test_cli_diff_of_a_missing_version_or_dataset_says_what_exists(
        two_versions: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", two_versions, "1", "7"]) == 1
    assert f"{two_versions} has no version 7 (versions: 1, 2)" in capsys.readouterr().err
    assert main(["diff", "no_such_dataset", "1", "2"]) == 1
    assert "no dataset 'no_such_dataset'" in capsys.readouterr().err


def test_cli_datasets_lists_versions(two_versions: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", two_versions, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(v["dataset"], v["version"], v["row_count"]) for v in listed] == [
        (two_versions, 1, 40),
        (two_versions, 2, 40),
    ]
    assert main(["datasets", "nothing_here"]) == 1
    assert "no versions of nothing_here" in capsys.readouterr().out


def test_api_lists_versions_and_diffs_them(settings: Settings, two_versions: str) -> None:
    from tests.conftest import api_client

    client = api_client(settings, max_body_bytes=64 * 1024)
    listed = client.get(f"/v1/datasets/{two_versions}")
    assert listed.status_code == 200
    assert [(v["version"], v["row_count"], v["columns"]["name"]) for v in listed.json()] == [
        (1, 40, "string"),
        (2, 40, "string"),
    ]
    assert any(v["dataset"] == two_versions for v in client.get("/v1/datasets").json())
    diff = client.get(f"/v1/datasets/{two_versions}/diff", params={"v1": 1, "v2": 2})
    assert diff.status_code == 200 and diff.json()["counts"]["changed"] == 2
    missing = client.get(f"/v1/datasets/{two_versions}/diff", params={"v1": 1, "v2": 5})
    assert missing.status_code == 404 and "no version 5" in missing.json()["detail"]
    assert client.get("/v1/datasets/nope").status_code == 404
    bad = client.get(f"/v1/datasets/{two_versions}/diff", params={"v1": 0})
    assert bad.status_code == 422
