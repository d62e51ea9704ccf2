"""Whole runs on the session's local Ray cluster: counts, outputs, ids, failures, reaping."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from augment_core.store import open_store
from pipelines.workflows.loader import load_spec
from tests.conftest import ROOT, SAMPLE_CSV, SAMPLE_SPEC
from tests.integration.conftest import run_spec

# Rows of configs/data/organisations.csv that must be quarantined (see bench/synth.py).
EXPECTED_QUARANTINED_ROWS = [
    3, 10, 23, 51, 63, 67, 79, 84, 118, 127, 139, 150, 155, 191, 195, 202, 210, 220, 256, 262, 272, 276, 284,
]


def write_spec(tmp_path: Path, changes: dict) -> Path:
    """The sample spec with top-level keys replaced, written beside the sample data."""
    data = yaml.safe_load(SAMPLE_SPEC.read_text())
    data.update(changes)
    for step in data["steps"]:
        if "reference" in step["params"]:
            step["params"]["reference"] = str(ROOT / "configs" / "data" / "country_regions.csv")
    if "path" in data["source"] and not Path(data["source"]["path"]).is_absolute():
        data["source"]["path"] = str(SAMPLE_CSV)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_each_step_records_its_own_work_time(sample_run):
    """The augmenters run fused in one Ray Data stage, so their wall-clock spans are one; each
    step's work time, summed over its batches, tells them apart."""
    spec = load_spec(SAMPLE_SPEC)
    work = {s.name: s.seconds for s in sample_run.steps}
    assert set(work) == {"validate", *spec.step_names(), "write"}
    assert all(work[name] > 0 for name in ["validate", *spec.step_names()]), work


def test_sample_run_reconciles_and_writes_every_output(sample_run, settings):
    run = sample_run
    assert run.status == "succeeded", run.error
    assert run.counts["in"] == 300
    assert run.counts["valid"] == 277 and run.counts["augmented"] == 277
    assert run.counts["quarantined"] == 23
    assert run.counts["in"] == run.counts["valid"] + run.counts["quarantined"]
    assert [s.state for s in run.steps] == ["succeeded"] * len(run.steps)
    assert {s.name: s.rows for s in run.steps}["validate"] == 300

    output = pq.read_table(run.output["path"])
    assert output.num_rows == 277
    ids = output["record_uuid"].to_pylist()
    assert len(set(ids)) == 277 and None not in ids
    for column in ("name_clean", "website_domain", "email_normalized", "country_code", "phone_e164",
                   "description_words", "region", "currency", "size_band"):
        assert column in output.column_names
    # Input columns are kept as they were.
    raw = {row["org_id"]: row for row in csv.DictReader(SAMPLE_CSV.open(encoding="utf-8"))}
    first = output.slice(0, 1).to_pylist()[0]
    assert first["website"] == raw[first["org_id"]]["website"].strip()

    quarantine = pq.read_table(run.output["quarantine_path"]).to_pylist()
    assert sorted(r["source_row"] for r in quarantine) == EXPECTED_QUARANTINED_ROWS
    by_row = {r["source_row"]: r for r in quarantine}
    assert by_row[3]["field"] == "name" and "required" in by_row[3]["reason"]
    assert by_row[51]["field"] == "org_id" and "first seen at row 35" in by_row[51]["reason"]
    assert json.loads(by_row[10]["record"])["email"] == raw[json.loads(by_row[10]["record"])["org_id"]]["email"]

    with open(run.output["csv_path"], encoding="utf-8") as handle:
        assert sum(1 for _ in csv.reader(handle)) == 277 + 1

    versions = open_store(settings).list_dataset_versions("organisations_enriched")
    assert any(v.run_id == run.id and v.row_count == 277 and v.path == run.output["path"] for v in versions)


def test_rerun_gives_the_same_record_ids_and_a_new_version(sample_run, settings):
    again = run_spec(settings, SAMPLE_SPEC)
    assert again.status == "succeeded"
    assert again.output["version"] > sample_run.output["version"]
    first = sorted(pq.read_table(sample_run.output["path"])["record_uuid"].to_pylist())
    second = sorted(pq.read_table(again.output["path"])["record_uuid"].to_pylist())
    assert first == second


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_other_file_formats_give_the_same_records(kind, sample_run, settings, tmp_path):
    rows = list(csv.DictReader(SAMPLE_CSV.open(encoding="utf-8")))
    data_path = tmp_path / f"organisations.{kind}"
    if kind == "jsonl":
        data_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        import pyarrow as pa

        pq.write_table(pa.Table.from_pylist(rows), data_path)
    spec = write_spec(tmp_path, {"source": {"kind": kind, "path": str(data_path)}})
    run = run_spec(settings, spec)
    assert run.status == "succeeded", run.error
    assert (run.counts["in"], run.counts["valid"], run.counts["quarantined"]) == (300, 277, 23)
    expected = pq.read_table(sample_run.output["path"]).sort_by("record_uuid")
    got = pq.read_table(run.output["path"]).sort_by("record_uuid")
    assert got.equals(expected)


def test_a_step_that_raises_fails_the_run_with_its_error(ray_cluster, settings, tmp_path):
    reference = tmp_path / "regions.csv"
    reference.write_text("country_code,region,currency\nFR,Europe,EUR\nFR,Europe,EUR\n", encoding="utf-8")
    data = yaml.safe_load(SAMPLE_SPEC.read_text())
    data["source"]["path"] = str(SAMPLE_CSV)
    for step in data["steps"]:
        if "reference" in step["params"]:
            step["params"]["reference"] = str(reference)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    run = run_spec(settings, spec)
    assert run.status == "failed"
    assert "step 'region' (lookup) setup failed" in run.error
    assert "regions.csv: key 'country_code' is not unique" in run.error
    assert run.finished_at is not None
    assert "running" not in {s.state for s in run.steps}


def test_a_file_source_sizes_its_runs_blocks_and_object_store_share_on_its_own_context(ray_cluster):
    import ray

    from pipelines.io.resources import OBJECT_STORE_SHARE, block_bytes, cluster_cpus
    from pipelines.io.sources import read_source

    spec = load_spec(SAMPLE_SPEC)
    raw = read_source(spec.source, spec.schema_)
    assert raw.context.target_max_block_size == block_bytes(int(SAMPLE_CSV.stat().st_size), cluster_cpus())
    assert raw.context.override_object_store_memory_limit_fraction == OBJECT_STORE_SHARE
    # The run's own copy: the process's context (other plans of the same driver) is left as it was.
    assert ray.data.DataContext.get_current().override_object_store_memory_limit_fraction != OBJECT_STORE_SHARE
    assert raw.count() == 300


def test_a_source_missing_a_required_column_fails_clearly(ray_cluster, settings, tmp_path):
    data_path = tmp_path / "no_name.csv"
    data_path.write_text("org_id,website\nORG-00001,acme.com\n", encoding="utf-8")
    run = run_spec(settings, write_spec(tmp_path, {"source": {"kind": "csv", "path": str(data_path)}}))
    assert run.status == "failed"
    assert "required column(s) ['name'] are missing" in run.error


def test_runs_are_stored_in_postgresql_too(ray_cluster, postgres_url, settings):
    pg_settings = settings.model_copy(update={"database_url": postgres_url})
    run = run_spec(pg_settings, SAMPLE_SPEC)
    assert run.status == "succeeded"
    stored = open_store(pg_settings).get_run(run.id)
    assert stored.counts["valid"] == 277
    assert open_store(pg_settings).list_dataset_versions("organisations_enriched")[-1].run_id == run.id


def test_postgres_query_source(ray_cluster, postgres_url, settings, tmp_path, monkeypatch):
    import psycopg

    rows = list(csv.DictReader(SAMPLE_CSV.open(encoding="utf-8")))[:40]
    with psycopg.connect(postgres_url) as conn:
        conn.execute("DROP TABLE IF EXISTS augment_test_orgs")
        conn.execute("CREATE TABLE augment_test_orgs (org_id text, name text, website text, email text, "
                     "phone text, country text, employees text, description text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO augment_test_orgs VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                            [tuple(r.values()) for r in rows])
    monkeypatch.setenv("AUGMENT_TEST_SOURCE_DSN", postgres_url)
    spec = write_spec(tmp_path, {"source": {"kind": "postgres", "dsn_env": "AUGMENT_TEST_SOURCE_DSN",
                                            "query": "SELECT * FROM augment_test_orgs ORDER BY org_id"}})
    run = run_spec(settings, spec)
    assert run.status == "succeeded", run.error
    assert run.counts["in"] == 40 and run.counts["valid"] + run.counts["quarantined"] == 40
    assert run.counts["quarantined"] == 3  # rows 3, 10 and 23 of the sample are invalid
    assert postgres_url not in json.dumps(open_store(settings).get_run(run.id).model_dump(mode="json"))


def test_killed_driver_leaves_no_run_running(ray_cluster, settings, tmp_path):
    """SIGKILL the `augment run` driver: its coordinator dies with it and the cluster's reaper fails
    the run, on its own timer: nobody here reads it in a way that writes."""
    env = {**os.environ, "AUGMENT_HEARTBEAT_SECONDS": "1", "AUGMENT_STALE_AFTER_SECONDS": "8",
           "RAY_ADDRESS": ray_cluster.gcs_address}
    driver = subprocess.Popen([sys.executable, "-m", "augment_cli.main", "run", str(SAMPLE_SPEC)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_id = None
    for line in driver.stdout:
        if line.startswith("run ") and "started" in line:
            run_id = line.split()[1]
            break
    assert run_id, "the driver never reported a run id"
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    store = open_store(settings)
    # The reaper may have been started with the session's settings: stale after 30 s, every 5 s.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run = store.get_run(run_id)
        if run.status != "running" and run.status != "pending":
            break
        time.sleep(1)
    assert run.status == "failed"
    assert "driver lost" in run.error


def test_cli_run_reports_counts_and_exit_code(ray_cluster, settings):
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.gcs_address}
    result = subprocess.run([sys.executable, "-m", "augment_cli.main", "run", str(SAMPLE_SPEC)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "in 300 · valid 277 · quarantined 23 · augmented 277" in result.stdout
    run_id = result.stdout.split("run ", 1)[1].split()[0]
    status = subprocess.run([sys.executable, "-m", "augment_cli.main", "status", run_id[:17]],
                            env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "succeeded" in status.stdout
    missing = subprocess.run([sys.executable, "-m", "augment_cli.main", "status", "nope"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "no run 'nope'" in missing.stderr


def test_a_live_run_is_read_from_its_coordinator(ray_cluster, settings):
    import ray

    from actors.runs import read_run, start_run
    from pipelines.workflows.loader import load_spec

    run_id, (_, final) = start_run(settings, load_spec(SAMPLE_SPEC), str(SAMPLE_SPEC))
    deadline = time.monotonic() + 60
    live = read_run(settings, run_id)
    while live.status != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        live = read_run(settings, run_id)
    assert live.status == "running"
    # The coordinator knows the validate step started before the next heartbeat stores it.
    while live.steps[0].state == "pending" and time.monotonic() < deadline:
        time.sleep(0.2)
        live = read_run(settings, run_id)
    assert live.steps[0].state in ("running", "succeeded")
    assert ray.get(final, timeout=300) == "succeeded"
    assert read_run(settings, run_id).status == "succeeded"


def test_a_file_error_ends_the_run_in_one_line_and_its_traceback_goes_to_the_error_log(ray_cluster, tmp_path):
    bad = tmp_path / "orgs.parquet"
    bad.write_bytes(b"org_id,name\nORG-1,Acme\n")
    spec = write_spec(tmp_path, {"source": {"kind": "parquet", "path": str(bad)}})
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.gcs_address}
    result = subprocess.run([sys.executable, "-m", "augment_cli.main", "run", str(spec)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"{bad}: not a Parquet file (Parquet magic bytes not found in footer)" in result.stdout
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    pointer = [line for line in result.stderr.splitlines() if line.startswith("full error with its traceback: ")]
    assert len(pointer) == 1, result.stderr[-2000:]
    log = Path(pointer[0].split(": ", 1)[1]).read_text(encoding="utf-8")
    assert "not a Parquet file" in log and "Traceback (most recent call last)" in log
