"""`augment import`: files become a new, read-only, catalogued version, validated like a run.

Imports run on the session's Ray cluster; every test uses its own dataset names.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augment_cli.main import main
from augment_core.store import MetadataStore, PathCatalogued, open_store
from pipelines.engine.validation import record_uuid
from pipelines.io.dataset_source import resolve_dataset_source
from pipelines.io.files import SourceError
from pipelines.operations.import_schema import ImportRefused
from pipelines.operations.importer import import_dataset
from pipelines.spec.errors import SpecError
from pipelines.spec.workflow import FileSource, SchemaSpec
from pipelines.workflows.loader import load_spec, parse_spec
from tests.conftest import SAMPLE_CSV, SAMPLE_SPEC


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def checksums(folder: str) -> dict[str, str]:
    """Every file under a version folder with its SHA-256: what 'unchanged' means."""
    out = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root, name)
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def import_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["import", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def sample_import(ray_cluster, settings):
    """The sample CSV imported with the sample workflow's schema, once for the module."""
    dataset = unique("orgs")
    schema = load_spec(SAMPLE_SPEC).schema_
    result = import_dataset(settings, FileSource(kind="csv", path=str(SAMPLE_CSV)), dataset, schema)
    return result, schema


def test_an_import_validates_like_a_run_and_is_catalogued_read_only(sample_import, settings):
    result, schema = sample_import
    assert (result.rows_in, result.valid, result.quarantined) == (300, 277, 23)
    assert result.rows_in == result.valid + result.quarantined

    table = pq.read_table(result.path)
    assert table.num_rows == 277 and table.column_names == ["record_uuid", *schema.fields]
    for row in table.slice(0, 20).to_pylist():  # the id a run gives: UUID5 of the typed key
        assert row["record_uuid"] == record_uuid(row, schema)
    quarantine = {r["source_row"]: r for r in pq.read_table(result.quarantine_path).to_pylist()}
    assert len(quarantine) == 23
    assert quarantine[3]["field"] == "name" and "required" in quarantine[3]["reason"]
    assert "first seen at row 35" in quarantine[51]["reason"]

    (entry,) = open_store(settings).list_dataset_versions(result.dataset)
    assert (entry.version, entry.row_count, entry.path) == (1, 277, result.path)
    assert entry.imported_from == str(SAMPLE_CSV) and entry.run_id.startswith("import-")
    for root, dirs, files in os.walk(result.path):
        for name in [*files, *dirs, "."]:
            assert not os.stat(Path(root, name)).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_a_second_import_adds_a_version_and_leaves_the_first_unchanged(sample_import, settings, tmp_path):
    result, schema = sample_import
    before = checksums(result.path)
    again = import_dataset(settings, FileSource(kind="csv", path=str(SAMPLE_CSV)), result.dataset, schema)
    assert again.version == 2 and again.path != result.path
    assert checksums(result.path) == before
    # The same records get the same ids in every version.
    assert sorted(pq.read_table(again.path)["record_uuid"].to_pylist()) == sorted(
        pq.read_table(result.path)["record_uuid"].to_pylist()
    )


def test_import_by_key_takes_every_column_of_a_csv_as_text(ray_cluster, settings, capsys, tmp_path):
    csv_file = tmp_path / "people.csv"
    csv_file.write_text("id,name,age\nP1,Ada,36\nP2,Alan,41\nP1,Again,1\n,Nobody,3\nP3,\"broken\n")
    dataset = unique("people")
    code, out, err = import_cli(capsys, str(csv_file), "--dataset", dataset, "--key", "id")
    assert code == 0, err
    assert "in 5 · valid 2 · quarantined 3" in out and f"{dataset} v1" in out

    (entry,) = open_store(settings).list_dataset_versions(dataset)
    table = pq.read_table(entry.path)
    assert table.schema.field("age").type == pa.string()
    key_schema = SchemaSpec(fields={"id": {"required": True}}, key=["id"])
    assert {r["id"]: r["record_uuid"] for r in table.to_pylist()} == {
        "P1": record_uuid({"id": "P1"}, key_schema), "P2": record_uuid({"id": "P2"}, key_schema),
    }
    quarantine = pq.read_table(entry.path.replace("/datasets/", "/quarantine/")).to_pylist()
    reasons = {r["source_row"]: r["reason"] for r in quarantine}
    assert "duplicate key" in reasons[3] and "required" in reasons[4] and "malformed CSV" in reasons[5]


def test_import_by_key_reads_json_lines_and_typed_parquet(ray_cluster, settings, capsys, tmp_path):
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text('{"sku": "A", "price": 3}\n{"sku": "B", "colour": "red"}\nnot json\n')
    dataset = unique("items")
    code, out, err = import_cli(capsys, str(jsonl), "--dataset", dataset, "--key", "sku", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["rows_in"], summary["valid"], summary["quarantined"]) == (3, 2, 1)
    assert pq.read_table(summary["path"]).column_names == ["record_uuid", "sku", "price", "colour"]
    assert pq.read_table(summary["path"]).schema.field("price").type == pa.int64()  # typed by its values

    parquet = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"n": pa.array([1, 2], pa.int64()), "x": pa.array([0.5, None])}), parquet)
    code, out, err = import_cli(capsys, str(parquet), "--dataset", unique("typed"), "--key", "n", "--json")
    assert code == 0, err
    written = pq.read_table(json.loads(out)["path"])
    assert written.schema.field("n").type == pa.int64() and written.schema.field("x").type == pa.float64()


def test_import_errors_say_what_is_wrong_and_write_nothing(ray_cluster, settings, capsys, tmp_path):
    dataset = unique("bad")
    code, _, err = import_cli(capsys, str(tmp_path / "missing.csv"), "--dataset", dataset, "--key", "id")
    assert code == 2 and "missing.csv: no such file or folder" in err
    code, _, err = import_cli(capsys, str(SAMPLE_CSV), "--dataset", dataset, "--key", "org_id,nope")
    assert code == 2 and "--key: column(s) ['nope'] are not in" in err and "org_id, name, website" in err
    odd = tmp_path / "records.dat"
    odd.write_text("id\n1\n")
    code, _, err = import_cli(capsys, str(odd), "--dataset", dataset, "--key", "id")
    assert code == 2 and "give --format" in err
    code, _, err = import_cli(capsys, str(SAMPLE_CSV), "--dataset", "9 lives", "--key", "org_id")
    assert code == 2 and "--dataset '9 lives' must start with a letter" in err
    spaced = tmp_path / "spaced.csv"
    spaced.write_text("id,first name\n1,a\n")
    code, _, err = import_cli(capsys, str(spaced), "--dataset", dataset, "--key", "id")
    assert code == 2 and "'first name'" in err and "--schema-from" in err
    code, _, err = import_cli(capsys, str(SAMPLE_CSV), "--dataset", dataset, "--schema-from", str(tmp_path / "no.yaml"))
    assert code == 2 and "cannot read" in err
    assert open_store(settings).list_dataset_versions(dataset) == []


def test_an_import_never_writes_into_a_catalogued_or_existing_path(sample_import, settings):
    result, schema = sample_import
    before = checksums(result.path)
    taken_id = Path(result.path).name.removeprefix("run-")
    with pytest.raises(PathCatalogued, match=r"v1 .*catalogued dataset versions are immutable"):
        import_dataset(settings, FileSource(kind="csv", path=str(SAMPLE_CSV)), result.dataset, schema, taken_id)
    assert checksums(result.path) == before

    leftover_id = f"import-{uuid.uuid4().hex[:8]}"
    leftover = Path(settings.storage_root, "datasets", result.dataset, f"run-{leftover_id}")
    leftover.mkdir(parents=True)
    (leftover / "mine.txt").write_text("not yours")
    with pytest.raises(ImportRefused, match="already exists"):
        import_dataset(settings, FileSource(kind="csv", path=str(SAMPLE_CSV)), result.dataset, schema, leftover_id)
    assert (leftover / "mine.txt").read_text() == "not yours"


def test_a_failed_import_removes_what_it_wrote_and_catalogues_nothing(ray_cluster, settings, tmp_path):
    no_name = tmp_path / "no_name.csv"
    no_name.write_text("org_id,website\nORG-00001,https://a.example\n")  # `name` is required by the schema
    dataset = unique("failed")
    with pytest.raises(Exception, match="required column"):
        import_dataset(settings, FileSource(kind="csv", path=str(no_name)), dataset, load_spec(SAMPLE_SPEC).schema_)
    assert open_store(settings).list_dataset_versions(dataset) == []
    assert not Path(settings.storage_root, "datasets", dataset).exists() or not any(
        Path(settings.storage_root, "datasets", dataset).iterdir()
    )


# the catalogue ------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    sqlite = f"sqlite:///{tmp_path / 'augment.db'}"
    url = sqlite if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = MetadataStore(url)
    yield store
    store.engine.dispose()


def test_the_catalogue_refuses_a_path_that_holds_a_version(store: MetadataStore):
    dataset, root = unique("cat"), f"s3://bucket/{uuid.uuid4().hex}"
    store.add_dataset_version(dataset, 1, f"{root}/v1", {"a": "string"}, 1, "run-a", imported_from="/in.csv")
    for path in (f"{root}/v1", f"{root}/v1/", f"{root}/v1/part", root):
        with pytest.raises(PathCatalogued, match=f"{dataset} v1"):
            store.add_dataset_version(dataset, 2, path, {"a": "string"}, 1, "run-b")
    store.refuse_catalogued(f"{root}/v10")  # a sibling whose name starts alike is another path
    entry = store.add_next_dataset_version(dataset, f"{root}/v2", {"a": "string"}, 1, "run-b")
    assert entry.version == 2 and entry.imported_from is None
    assert [v.imported_from for v in store.list_dataset_versions(dataset)] == ["/in.csv", None]


def test_an_older_catalogue_gains_the_imported_from_column(tmp_path: Path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE dataset_versions (dataset VARCHAR(200), version INTEGER, path TEXT NOT NULL,"
            " schema JSON NOT NULL, row_count BIGINT NOT NULL, run_id VARCHAR(64) NOT NULL,"
            " created_at DATETIME NOT NULL, PRIMARY KEY (dataset, version))"
        )
        conn.execute("INSERT INTO dataset_versions VALUES ('old', 1, '/p', '{}', 0, 'r1', '2026-01-01 00:00:00')")
    store = MetadataStore(f"sqlite:///{db}")
    (entry,) = store.list_dataset_versions("old")
    assert entry.imported_from is None
    store.add_dataset_version("old", 2, "/q", {}, 0, "import-x", imported_from="/in.csv")
    assert store.get_dataset_version("old", 2).imported_from == "/in.csv"
    store.engine.dispose()


# the dataset source -------------------------------------------------------------------------
def dataset_spec(name: str, version: object = "latest") -> dict:
    return {
        "name": "from_dataset", "source": {"kind": "dataset", "name": name, "version": version},
        "schema": {"key": "org_id", "fields": {"org_id": {"required": True}}}, "sink": {"dataset": "out"},
    }


def test_a_dataset_source_names_a_version_or_latest():
    with pytest.raises(SpecError) as caught:
        parse_spec(dataset_spec("orgs", 0))
    assert caught.value.errors == ["source.version: expected a version number (1 or more) or 'latest', got 0"]
    with pytest.raises(SpecError) as caught:
        parse_spec({**dataset_spec("orgs"), "source": {"kind": "dataset", "name": "orgs", "path": "/x"}})
    assert caught.value.errors == ["source.path: unknown key"]


def test_a_dataset_source_resolves_to_a_catalogued_version(sample_import, settings, capsys, tmp_path):
    result, _ = sample_import
    store = open_store(settings)
    spec = parse_spec(dataset_spec(result.dataset))
    entry = resolve_dataset_source(spec, store)
    assert spec.source.path == entry.path
    assert entry.version == max(v.version for v in store.list_dataset_versions(result.dataset))
    spec = parse_spec(dataset_spec(result.dataset, 1))
    assert resolve_dataset_source(spec, store).path == result.path

    with pytest.raises(SourceError, match=rf"dataset '{result.dataset}' has no version 99 \(versions: 1"):
        resolve_dataset_source(parse_spec(dataset_spec(result.dataset, 99)), store)
    missing = unique("nothing")
    with pytest.raises(SourceError, match=f"no dataset '{missing}'"):
        resolve_dataset_source(parse_spec(dataset_spec(missing)), store)
    spec_file = tmp_path / "from_missing.yaml"
    spec_file.write_text(json.dumps(dataset_spec(missing)))
    assert main(["run", str(spec_file)]) == 2
    assert f"no dataset '{missing}'" in capsys.readouterr().err
