"""Resume and exactly-once: a run that loses its driver or a worker process ends with every valid
record exactly once in its dataset, and provider calls already answered are not sent again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

from actors.runs import coordinator_alive, spec_data, start_run
from augment_cli.main import main
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import open_store
from devtools.fake_openai import FakeOpenAI
from pipelines.engine.batch import BatchPlan
from pipelines.io.parquet import complete_parquet_rows, whole_parquet_files
from pipelines.workflows.loader import load_spec
from tests.conftest import ROOT
from tests.integration.conftest import company_llm_spec

AUGMENT = str(Path(sys.executable).parent / "augment")
RECORDS = 200
IN_FLIGHT = 4  # the most calls a kill can leave answered but unrecorded


def llm_spec(folder: Path, base_url: str, records: int = RECORDS) -> Path:
    """An llm step at 10 requests a second, 20 records per augment call and output file."""
    return company_llm_spec(folder, base_url, records, "resumed", sink={"batch_rows": 20},
                            limits={"requests_per_minute": 600, "max_in_flight": IN_FLIGHT})


def wait_for(condition, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def coordinator_gone(run_id: str) -> bool:
    return not coordinator_alive(run_id)


def output_ids(path: str) -> list[str]:
    return pq.read_table(path, columns=["record_uuid"])["record_uuid"].to_pylist()


def assert_every_record_once(settings: Settings, run_id: str, records: int) -> None:
    run = open_store(settings).get_run(run_id)
    assert run.status == "succeeded", run.error
    assert (run.counts["in"], run.counts["valid"], run.counts["quarantined"]) == (records, records, 0)
    table = pq.read_table(run.output["path"])
    ids = table["record_uuid"].to_pylist()
    assert len(ids) == records and len(set(ids)) == records
    errors = {e for e in table["profile_error"].to_pylist() if e}
    assert set(table["profile_status"].to_pylist()) == {"ok"}, errors
    [version] = open_store(settings).list_dataset_versions(run.workflow)
    assert version.row_count == records and version.run_id == run_id


def test_a_job_submitted_again_after_its_driver_was_killed_carries_the_run_on(
        ray_cluster, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = open_store(settings)
    with FakeOpenAI() as fake:
        spec_path = llm_spec(tmp_path, fake.base_url)
        spec = load_spec(spec_path)
        env = {**os.environ, "AUGMENT_RAY_ADDRESS": ray_cluster.gcs_address}
        driver = subprocess.Popen([AUGMENT, "run", str(spec_path)], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: store.list_runs(workflow=spec.name, limit=1), "the run row")
            [run] = store.list_runs(workflow=spec.name, limit=1)
            output = StoragePaths(settings).filesystem(StoragePaths(settings).dataset_run(spec.name, run.id))
            wait_for(lambda: complete_parquet_rows(*output) >= 40, "some durable output")
        finally:
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=30)
        wait_for(lambda: coordinator_gone(run.id), "the coordinator to die with its driver", timeout=120)
        written_before = complete_parquet_rows(*output)
        assert written_before < RECORDS

        assert main(["run", str(spec_path)]) == 0  # the same job again: it resumes the lost run
        assert f"run {run.id} resumed" in capsys.readouterr().err
        sent = fake.stats()["requests"]

    assert_every_record_once(settings, run.id, RECORDS)
    assert open_store(settings).get_run(run.id).resumes == 1
    assert RECORDS <= sent <= RECORDS + IN_FLIGHT  # answered calls came back from the cache


def test_a_run_that_loses_a_worker_process_writes_every_record_once(
        ray_cluster, settings: Settings, tmp_path: Path) -> None:
    from ray.util.state import list_actors

    with FakeOpenAI() as fake:
        spec = load_spec(llm_spec(tmp_path, fake.base_url))
        run_id, (_, final) = start_run(settings, spec, "<test>")
        wait_for(lambda: fake.stats()["requests"] >= 40, "provider calls")
        workers = [a for a in list_actors(address=ray_cluster.dashboard_url, filters=[("state", "=", "ALIVE")])
                   if "AugmentBatches" in a.class_name]
        assert workers, "no Ray Data map worker is alive"
        os.kill(workers[0].pid, signal.SIGKILL)
        assert ray.get(final, timeout=300) == "succeeded"
        sent = fake.stats()["requests"]

    assert_every_record_once(settings, run_id, RECORDS)
    assert RECORDS <= sent <= RECORDS + IN_FLIGHT


@pytest.mark.parametrize("unique_key", [True, False])
def test_resume_removes_a_cut_short_file_and_writes_only_what_is_missing(
        ray_cluster, settings: Settings, capsys: pytest.CaptureFixture[str], unique_key: bool) -> None:
    """Whole files stand; a file without its footer and the files never written are done again.
    Without a unique key, records may share an id: then everything is written again."""
    spec = load_spec(ROOT / "configs" / "workflows" / "organisations.yaml")
    spec = spec.model_copy(update={"sink": spec.sink.model_copy(update={"batch_rows": 40}),
                                   "schema_": spec.schema_.model_copy(update={"unique_key": unique_key})})
    store = open_store(settings)
    run_id = f"resume-{uuid.uuid4().hex[:8]}"
    store.create_run(run_id, spec.name, spec.version, "<test>", spec.run_step_names(),
                     spec=spec_data(spec))
    paths = StoragePaths(settings)
    plan = BatchPlan(spec, paths, run_id)  # the first attempt: it wrote everything...
    plan.validate()
    plan.write()
    fs, folder = paths.filesystem(paths.dataset_run(spec.sink.dataset, run_id))
    files = sorted(whole_parquet_files(fs, folder))
    assert len(files) >= 4
    expected = sorted(output_ids(folder))
    for lost in files[:2]:  # ...but two files never landed
        fs.delete_file(lost)
    with open(files[2], "r+b") as handle:  # and one was cut short
        handle.truncate(100)
    store.finish_run(run_id, "failed", error="driver lost: simulated")

    assert main(["resume", run_id[:12]]) == 0
    assert f"run {run_id} resumed" in capsys.readouterr().err
    run = store.get_run(run_id)
    assert run.status == "succeeded" and run.resumes == 1
    assert (run.counts["in"], run.counts["valid"], run.counts["quarantined"]) == (
        300,
        len(expected),
        300 - len(expected),
    )
    assert sorted(output_ids(run.output["path"])) == expected
    if unique_key:
        assert len(expected) == 277 == len(set(expected))
    else:  # the sample has records with repeated keys: each is in the output as often as in the input
        assert len(expected) > len(set(expected))


def test_resume_of_a_run_whose_folder_is_catalogued_writes_a_new_folder_and_version(
        ray_cluster, settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    """A run catalogued before versions were published with its success, then lost: the resume
    leaves every file of the catalogued version as it is and writes the run's next folder whole."""
    spec = load_spec(ROOT / "configs" / "workflows" / "organisations.yaml")
    spec = spec.model_copy(update={"name": f"immutable_{uuid.uuid4().hex[:6]}",
                                   "sink": spec.sink.model_copy(update={"dataset": f"immutable_{uuid.uuid4().hex[:6]}",
                                                                        "batch_rows": 40})})
    store = open_store(settings)
    run_id = f"resume-{uuid.uuid4().hex[:8]}"
    store.create_run(run_id, spec.name, spec.version, "<test>", spec.run_step_names(), spec=spec_data(spec))
    paths = StoragePaths(settings)
    plan = BatchPlan(spec, paths, run_id)
    plan.validate()
    written = plan.write()
    store.add_next_dataset_version(spec.sink.dataset, written.output_path, {}, written.valid, run_id)
    fs, folder = paths.filesystem(written.output_path)
    files = sorted(whole_parquet_files(fs, folder))
    with open(files[0], "r+b") as handle:  # a file cut short inside the catalogued folder
        handle.truncate(100)
    catalogued = {f: Path(f).read_bytes() for f in parquet_paths(folder)}
    store.finish_run(run_id, "failed", error="driver lost: simulated")

    assert main(["resume", run_id]) == 0
    run = store.get_run(run_id)
    assert run.status == "succeeded", run.error
    assert run.output["path"] == paths.dataset_run(spec.sink.dataset, f"{run_id}-resume1")
    assert {f: Path(f).read_bytes() for f in parquet_paths(folder)} == catalogued  # not a byte changed
    assert len(output_ids(run.output["path"])) == run.counts["valid"] == 277
    versions = store.list_dataset_versions(spec.sink.dataset)
    assert [(v.version, v.path) for v in versions] == [(1, written.output_path), (2, run.output["path"])]


def parquet_paths(folder: str) -> list[str]:
    return sorted(str(p) for p in Path(folder).rglob("*.parquet"))


def test_resume_refuses_an_input_that_changed_since_the_run_started(
        ray_cluster, settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    spec = load_spec(ROOT / "configs" / "workflows" / "organisations.yaml")
    store = open_store(settings)
    run_id = f"resume-{uuid.uuid4().hex[:8]}"
    store.create_run(run_id, spec.name, spec.version, "<test>", spec.run_step_names(),
                     spec=spec_data(spec))
    store.update_run(run_id, input={"files": [[spec.source.path, 1, 1]]})  # what the first attempt read
    store.finish_run(run_id, "failed", error="driver lost: simulated")

    assert main(["resume", run_id]) == 1
    run = store.get_run(run_id)
    assert run.status == "failed" and "the input changed since this run started" in run.error
    assert "augment run --fresh" in run.error


def test_resume_refuses_what_it_cannot_carry_on(
        ray_cluster, settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    spec = load_spec(ROOT / "configs" / "workflows" / "organisations.yaml")
    store = open_store(settings)
    done = f"resume-{uuid.uuid4().hex[:8]}"
    store.create_run(done, spec.name, spec.version, "<test>", ["validate", "write"], spec=spec_data(spec))
    store.finish_run(done, "succeeded")
    assert main(["resume", done]) == 1
    assert f"run {done} already succeeded: nothing to resume" in capsys.readouterr().err

    old = f"resume-{uuid.uuid4().hex[:8]}"
    store.create_run(old, spec.name, spec.version, "<test>", ["validate", "write"])  # no spec kept
    store.finish_run(old, "failed", error="driver lost: long ago")
    assert main(["resume", old]) == 1
    assert "started before runs kept their spec" in capsys.readouterr().err
    assert store.get_run(old).status == "failed"

    assert main(["resume", "no-such-run"]) != 0
