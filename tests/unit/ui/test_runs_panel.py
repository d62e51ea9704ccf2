"""The runs panel's views: failures are shown as messages, never as an empty table."""

from __future__ import annotations

import datetime as dt

import gradio as gr

from augment_core.store import RunRecord, StepState
from ui.runs import build_runs_panel, list_view, run_view

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def run(run_id: str = "20260102-030405-abcd1234", **fields: object) -> RunRecord:
    values = dict(
        id=run_id,
        workflow="organisations",
        workflow_version=1,
        spec_path="/x.yaml",
        status="failed",
        steps=[
            StepState(name="validate", state="succeeded", rows=9),
            StepState(name="write", state="failed", error="disk full"),
        ],
        counts={"in": 9, "valid": 7, "quarantined": 2, "augmented": 7},
        error="write failed: disk full",
        output={"dataset": "orgs", "version": 2, "path": "/data/orgs/v2", "quarantine_path": "/data/q"},
        created_at=NOW,
        started_at=NOW,
        finished_at=NOW + dt.timedelta(seconds=2.5),
    )
    return RunRecord(**(values | fields))


def failing() -> list[RunRecord]:
    raise ConnectionError("database is down")


def test_runs_are_listed_and_the_choice_is_kept() -> None:
    message, table, choices = list_view(lambda: [run()], "20260102")
    assert "1 most recent run(s)" in message
    assert table.values.tolist() == [
        ["20260102-030405-abcd1234", "organisations", "failed", 9, 7, 2, 7, 0, 0, "2026-01-02 03:04:05", "2.5 s"]
    ]
    assert choices["choices"] == ["20260102-030405-abcd1234"] and choices["value"] == "20260102"


def test_an_empty_store_says_so() -> None:
    message, table, _ = list_view(lambda: [], None)
    assert message.startswith("No runs yet") and table.empty


def test_a_failure_to_load_is_an_error_and_keeps_the_last_table() -> None:
    message, table, choices = list_view(failing, None)
    assert "Could not load runs" in message and "ConnectionError: database is down" in message
    assert table == gr.skip() and choices == gr.skip()


def test_one_run_shows_steps_error_and_outputs() -> None:
    summary, steps = run_view(lambda _id: run(), "20260102")
    assert "failed" in summary and "write failed: disk full" in summary and "/data/orgs/v2" in summary
    assert steps.values.tolist() == [["validate", "succeeded", 9, "", ""], ["write", "failed", 0, "", "disk full"]]


def test_a_failed_run_and_its_error_are_marked_as_errors_and_a_clean_one_is_not() -> None:
    summary, _ = run_view(lambda _id: run(), "20260102")
    assert summary.startswith("### ⚠️ Run") and "#### ⚠️ Error" in summary
    partial, _ = run_view(lambda _id: run(status="succeeded", error=None, counts={"in": 9, "failed": 1}), "2026")
    assert partial.startswith("### ⚠️ Run")  # records that failed stand out even when the run succeeded
    clean, _ = run_view(lambda _id: run(status="succeeded", error=None, counts={"in": 9}), "2026")
    assert "⚠️" not in clean


def test_the_panel_shows_no_server_paths() -> None:
    from serve_apps.gateway.redact import run_without_paths

    shown = run_without_paths(run(error="cannot write /srv/augment/data/orgs/v2/part-0.parquet"), "/data")
    summary, _ = run_view(lambda _id: shown, "2026")
    assert "orgs/v2" in summary and "/data/orgs" not in summary and "/srv/" not in summary
    assert "part-0.parquet" in summary


def test_an_unknown_or_unreadable_run_is_explained() -> None:
    def unknown(run_id: str) -> RunRecord:
        raise KeyError(f"no run {run_id!r}")

    summary, steps = run_view(unknown, "nope")
    assert "no run 'nope'" in summary and steps.empty
    summary, _ = run_view(lambda _id: failing()[0], "x")
    assert "Could not load run x" in summary


def test_the_panel_builds_without_serve() -> None:
    assert isinstance(build_runs_panel(lambda: [], lambda _id: run(), refresh_seconds=2), gr.Blocks)


def test_each_step_shows_its_work_time_once_measured() -> None:
    record = run(steps=[StepState(name="validate", state="succeeded", rows=9, seconds=1.25),
                        StepState(name="normalize_url_1", state="succeeded", rows=9, seconds=0.0412),
                        StepState(name="write", state="running")])
    table = run_view(lambda run_id: record, record.id)[1]
    assert table["work"].tolist() == ["1.2 s", "41 ms", ""]
