"""How `augment status` prints a run's steps."""

from __future__ import annotations

import datetime as dt

import pytest

from augment_cli.output import print_run
from augment_core.store import RunRecord, StepState


def test_each_step_prints_its_work_time_in_ms_or_s(capsys: pytest.CaptureFixture[str]) -> None:
    record = RunRecord(id="r1", workflow="wf", workflow_version=1, spec_path="/x.yaml", status="succeeded", steps=[
        StepState(name="validate", state="succeeded", rows=300, seconds=0.0412),
        StepState(name="normalize_phone_4", state="succeeded", rows=277, seconds=6.84, failed=3),
        StepState(name="write", state="succeeded", rows=300),
    ], counts={"in": 300, "valid": 277, "quarantined": 23}, created_at=dt.datetime(2026, 12, 3, tzinfo=dt.timezone.utc))
    print_run(record, as_json=False)
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("    ")}
    assert lines["validate"].endswith("300 rows · 41 ms of work")
    assert lines["normalize_phone_4"].endswith("277 rows · 6.8 s of work, with 3 failed")
    assert lines["write"].endswith("300 rows")
