"""`augment cancel`: a running run stops, ends 'cancelled' and reports what it wrote."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import ray

from actors.naming import NAMESPACE, run_actor_name
from actors.runs import start_run
from augment_cli.main import main
from augment_core.settings import Settings
from augment_core.store import open_store
from devtools.fake_openai import FakeOpenAI
from pipelines.workflows.loader import load_spec
from tests.integration.conftest import company_llm_spec


def slow_spec(folder: Path, base_url: str, records: int) -> Path:
    # 2 requests a second: the run takes a while
    return company_llm_spec(folder, base_url, records, "cancelled", limits={"requests_per_minute": 120})


def test_cancel_stops_a_running_run_and_keeps_its_report(
        ray_cluster, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAI() as fake:
        spec_path = slow_spec(tmp_path, fake.base_url, records=120)
        run_id, (_, final) = start_run(settings, load_spec(spec_path), str(spec_path))
        deadline = time.monotonic() + 120
        while fake.stats()["requests"] < 4 and time.monotonic() < deadline:  # calling the provider now
            time.sleep(0.2)
        assert fake.stats()["requests"] >= 4

        assert main(["cancel", run_id[:15]]) == 0
        printed = capsys.readouterr().out
        assert f"run {run_id}: cancelled" in printed and "not catalogued" in printed

        with pytest.raises(ray.exceptions.RayActorError):  # the coordinator is gone, and its work
            ray.get(final, timeout=60)
        with pytest.raises(ValueError):
            ray.get_actor(run_actor_name(run_id), namespace=NAMESPACE)
        calls = fake.stats()["requests"]
        time.sleep(3)
        assert fake.stats()["requests"] <= calls + 2  # at most what was already on the wire
        assert calls < 120

    run = open_store(settings).get_run(run_id)
    assert run.status == "cancelled" and run.error == "cancelled by user" and run.finished_at is not None
    states = {s.name: s.state for s in run.steps}
    assert states["validate"] == "succeeded" and states["profile"] == "cancelled" and states["write"] == "cancelled"
    assert run.counts["in"] == 120
    assert run.output["partial"] is True and run.output["rows_written"] >= 0
    assert open_store(settings).list_dataset_versions(run.workflow) == []  # a cancelled run is no version

    assert main(["cancel", run_id]) == 1  # a second time: it already ended
    assert f"run {run_id} already ended: cancelled" in capsys.readouterr().err


def test_cancel_of_an_unknown_run_says_so(ray_cluster, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cancel", "no-such-run"]) == 1
    assert "no run 'no-such-run'" in capsys.readouterr().err


def test_stopping_the_driver_cancels_its_run(ray_cluster, settings: Settings, tmp_path: Path) -> None:
    import os
    import re
    import signal
    import subprocess
    import sys

    with FakeOpenAI() as fake:
        spec_path = slow_spec(tmp_path, fake.base_url, records=120)
        env = {**os.environ, "RAY_ADDRESS": ray_cluster.gcs_address}
        driver = subprocess.Popen([sys.executable, "-m", "augment_cli.main", "run", str(spec_path)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while fake.stats()["requests"] < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        driver.send_signal(signal.SIGTERM)
        output, _ = driver.communicate(timeout=120)
        calls = fake.stats()["requests"]
        time.sleep(3)
        assert fake.stats()["requests"] <= calls + 2
    assert driver.returncode == 1, output
    run_id = re.search(r"run (\S+) started", output).group(1)
    run = open_store(settings).get_run(run_id)
    assert run.status == "cancelled" and run.error == "cancelled: driver interrupted (SIGTERM)"
    assert f"run {run_id}: cancelled" in output
