"""The data dashboard's reads on real dataset versions (Parquet files catalogued in the store): a
version's overview (fill, distinct, top values, ranges and histograms, step outcomes), kept per
version; records paged and filtered; two versions compared; the version or a slice downloaded as
CSV (formulas escaped) or Parquet, streamed by the API for any signed-in role, refused to none."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from augment_core.identity import Identity, Role
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import open_store
from pipelines.operations.version_profile import MAX_TRACKED, profile_version
from pipelines.operations.version_records import read_page
from serve_apps import data_panel
from serve_apps.api_v1.app import create_app
from serve_apps.data_panel import Profiles, data_access
from ui.data import (
    activity_view,
    build_data_panel,
    catalogue_view,
    diff_view,
    histogram_view,
    overview_view,
    records_view,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", storage_root=str(tmp_path / "data"),
                    workflows_dir=str(tmp_path), auth_cache_seconds=0)


def catalogue(settings: Settings, dataset: str, table: pa.Table, files: int = 2) -> int:
    """`table` written as a version of `dataset` in `files` files, catalogued."""
    store = open_store(settings)
    version = store.next_dataset_version(dataset)
    path = Path(StoragePaths(settings).dataset_run(dataset, f"run-{uuid.uuid4().hex[:6]}"))
    path.mkdir(parents=True)
    step = -(-table.num_rows // files)
    for n in range(files):
        pq.write_table(table.slice(n * step, step), path / f"part-{n}.parquet")
    store.add_dataset_version(dataset, version, str(path), {f.name: str(f.type) for f in table.schema},
                              table.num_rows, f"run-{version}")
    return version


def uid(i: int) -> str:
    """A record_uuid as runs make them: hex (a diff compares them a first digit at a time)."""
    return hashlib.md5(str(i).encode()).hexdigest()


def orgs(n: int, industry: str = "software") -> pa.Table:
    return pa.table({
        "record_uuid": [uid(i) for i in range(n)],
        "name": [f"Company {i}" if i % 4 else None for i in range(n)],
        "employees": pa.array([i + 1 for i in range(n)], pa.int64()),
        "industry": [industry if i % 2 else "=cmd()" for i in range(n)],
        "profile_status": ["ok" if i % 5 else "error" for i in range(n)],
    })


def test_a_versions_overview_counts_every_column_batch_by_batch(settings: Settings) -> None:
    version = catalogue(settings, "orgs", orgs(100))
    found = open_store(settings).get_dataset_version("orgs", version)
    profile = profile_version(StoragePaths(settings), found.path, batch_rows=7)  # many batches, same answer
    by = {c.name: c for c in profile.columns}
    assert profile.rows == 100 and by["name"].filled == 75 and by["name"].distinct == 75
    assert (by["employees"].minimum, by["employees"].maximum, by["employees"].mean) == (1, 100, 50.5)
    assert sum(n for *_, n in by["employees"].histogram) == 100 and len(by["employees"].histogram) == 10
    assert by["employees"].histogram[0][:2] == (1.0, 10.9) and by["employees"].histogram[-1][1] == 100.0
    assert by["industry"].top == [("software", 50), ("=cmd()", 50)] or by["industry"].top == [
        ("=cmd()", 50), ("software", 50)]
    assert profile.steps == {"profile": {"ok": 80, "error": 20, "skipped": 0}}


def test_distinct_values_past_the_bound_are_a_floor_not_a_count(settings: Settings) -> None:
    n = MAX_TRACKED + 500
    version = catalogue(settings, "wide", pa.table({"key": [f"k{i}" for i in range(n)]}), files=1)
    found = open_store(settings).get_dataset_version("wide", version)
    [key] = profile_version(StoragePaths(settings), found.path).columns
    assert key.distinct == MAX_TRACKED and key.distinct_capped and key.filled == n


def test_records_are_paged_and_filtered_on_any_column(settings: Settings) -> None:
    version = catalogue(settings, "orgs", orgs(120), files=3)
    path = open_store(settings).get_dataset_version("orgs", version).path
    rows, total = read_page(StoragePaths(settings), path, ["record_uuid", "employees"], None, None, 55, 10)
    assert total == 120 and [r["employees"] for r in rows] == list(range(56, 66))
    rows, total = read_page(StoragePaths(settings), path, None, "employees", "12", 0, 50)
    assert total == 1 and rows[0]["record_uuid"] == uid(11)
    with pytest.raises(KeyError, match="no column 'nope'; the version has record_uuid, name"):
        read_page(StoragePaths(settings), path, None, "nope", "1", 0, 10)


def test_the_dashboard_views_show_the_versions_their_overview_records_and_diff(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    first = catalogue(settings, "orgs", orgs(10))
    second = catalogue(settings, "orgs", orgs(12, industry="retail"))
    reads: list[str] = []
    monkeypatch.setattr(data_panel, "profile_version", lambda paths, path: reads.append(path) or profile_version(
        paths, path))
    profiles = Profiles(settings)
    access = data_access(settings, "/augment", profiles)
    status, table, names, versions = catalogue_view(access, None)
    assert status == "1 dataset(s) · **orgs**: 2 version(s), the newest v2"
    assert versions["choices"] == [second, first] and table.values[0][:2].tolist() == [2, "12"]
    status, columns, fill, steps, review, numeric = overview_view(access, "orgs", second)
    assert status.startswith("**orgs v2**: 12 rows, 5 columns") and "⚠ steps with errors: profile" in status
    assert columns.values[1].tolist()[:3] == ["name", "string", "75% (9)"]
    assert steps.values.tolist() == [["profile", "75% (9)", "25% (3)", "0% (0)"]] and numeric["choices"] == [
        "employees"]
    bins = histogram_view(access, "orgs", second, "employees")
    assert bins["visible"] and list(bins["value"]["from"])[0] == 1.0 and sum(bins["value"]["rows"]) == 12
    overview_view(access, "orgs", second)
    assert len(reads) == 1 and list(profiles.kept) == [("orgs", second)]  # asked for 3 times, read once
    shown, page, _, links = records_view(access, "orgs", second, ["record_uuid", "industry"], "industry", "retail", 0)
    assert shown == "rows 1–6 of 6 where industry = 'retail'" and list(page.columns) == ["record_uuid", "industry"]
    assert "/augment/api/v1/datasets/orgs/versions/2/download?format=csv&column=industry&value=retail" in links
    summary, changes = diff_view(access, "orgs", first, second)
    assert summary.startswith("**v1 → v2**: 2 added, 0 removed, 5 changed, 5 unchanged")
    assert 'class="after">retail</td>' in changes and 'class="before">software</td>' in changes
    assert diff_view(access, "orgs", 1, 1)[0] == "⚠️ Choose two different versions."
    assert overview_view(access, "orgs", 9)[0].startswith("⚠️ **Could not read orgs v9**: KeyError")
    status, per_run, reasons, by_provider, by_workflow, per_day = activity_view(dataclasses.replace(
        access, spend_per_day=lambda: [("2026-12-01", "acct", "orgs", 0.25), ("2026-12-01", "acct", "leads", 0.5)],
        quarantine_reasons=lambda: [("employees: not an integer", 3)]))
    assert status == "0 recent run(s); 0.750000 USD of provider calls in 30 days; 0 review decision(s) in 30 days"
    assert by_provider.values.tolist() == [["2026-12-01", "acct", 0.75]] and len(by_workflow) == 2
    assert reasons.values.tolist() == [["employees: not an integer", 3]] and per_run.empty and per_day.empty
    names = {fn.api_name for fn in build_data_panel(access).fns.values() if fn.api_name}
    assert {"list_versions", "version_overview", "read_records", "diff_versions", "activity"} <= names


def test_a_version_or_a_slice_downloads_streamed_for_any_role_and_none_without_one(settings: Settings) -> None:
    version = catalogue(settings, "orgs", orgs(150_000 // 1000 * 1000), files=3)
    identity = Identity(open_store(settings))
    identity.create_user("vera", Role.viewer, None)
    _, secret = identity.create_key("vera", "tests")
    api = TestClient(create_app(settings, 1 << 20), base_url="http://127.0.0.1")
    url = f"/v1/datasets/orgs/versions/{version}/download"
    assert api.get(url).status_code == 401
    api.headers["Authorization"] = f"Bearer {secret}"
    answer = api.get(url, params={"format": "parquet"})
    assert answer.status_code == 200 and 'filename="orgs-v1.parquet"' in answer.headers["content-disposition"]
    table = pq.read_table(io.BytesIO(answer.content))
    assert table.num_rows == 150_000 and table.column("employees").to_pylist()[-1] == 150_000
    sliced = api.get(url, params={"format": "csv", "column": "industry", "value": "=cmd()"})
    rows = list(csv.DictReader(io.StringIO(sliced.text)))
    assert len(rows) == 75_000 and rows[0]["industry"] == "'=cmd()"  # a spreadsheet shows it, never runs it
    assert api.get(url, params={"column": "nope", "value": "x"}).status_code == 404
    assert api.get("/v1/datasets/orgs/versions/9/download").status_code == 404
    assert api.get(url, params={"format": "xlsx"}).status_code == 422
