"""`ray job submit` of `augment run` against the cluster that `augment cluster up` started."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from augment_core.store import open_store
from tests.conftest import ROOT

RAY = str(Path(sys.executable).parent / "ray")


def test_ray_job_submit_runs_the_workflow(ray_cluster, settings):
    result = subprocess.run(
        [RAY, "job", "submit", "--address", ray_cluster.dashboard_url, "--working-dir", str(ROOT),
         "--entrypoint-num-cpus", "0.25", "--", "augment", "run", "configs/workflows/organisations.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "succeeded" in output
    run_id = re.search(r"run (\d{8}-\d{6}-[0-9a-f]{8}) started", output).group(1)

    run = open_store(settings).get_run(run_id)
    assert run.status == "succeeded"
    assert (run.counts["in"], run.counts["valid"], run.counts["quarantined"]) == (300, 277, 23)
    # The data lands under the cluster's storage root, not in the job's temporary working dir.
    assert run.output["path"].startswith(settings.storage_root)
    assert Path(run.output["path"]).is_dir()


def test_a_job_with_a_bad_spec_fails_with_exit_code_2(ray_cluster, tmp_path):
    (tmp_path / "bad.yaml").write_text("name: bad\nsource: {kind: csv}\n", encoding="utf-8")
    result = subprocess.run(
        [RAY, "job", "submit", "--address", ray_cluster.dashboard_url, "--working-dir", str(tmp_path),
         "--entrypoint-num-cpus", "0.25", "--", "augment", "run", "bad.yaml"],
        capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "source.path: Field required" in output
    assert "exit code 2" in output or "FAILED" in output
