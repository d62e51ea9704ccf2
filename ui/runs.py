"""The runs panel: recent runs, refreshed on a timer, and one run's steps, error and outputs.

Built from two read functions so it knows nothing of Serve, Ray or the store. A failure to
load is shown as an error next to the last data that did load, never as an empty table.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any

import gradio as gr
import pandas as pd

from augment_core.store import RunRecord, StepState

RUN_COLUMNS = ["run id", "workflow", "status", "in", "valid", "quarantined", "augmented", "failed", "skipped",
               "created (UTC)", "duration"]
STEP_COLUMNS = ["step", "state", "rows", "work", "error"]  # work: the step's time summed over workers
NO_RUN_CHOSEN = "Choose a run in the table or the list to see its steps."


def _duration(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.1f} s"


def _when(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _code(text: str) -> str:
    """Text shown verbatim in Markdown (errors and paths may hold *, _ or backticks)."""
    return "```text\n" + text.replace("```", "'''") + "\n```"


def runs_table(records: list[RunRecord]) -> pd.DataFrame:
    rows = [
        [r.id, r.workflow, r.status, r.counts.get("in", 0), r.counts.get("valid", 0),
         r.counts.get("quarantined", 0), r.counts.get("augmented", 0), r.counts.get("failed", 0),
         r.counts.get("skipped", 0), _when(r.created_at),
         _duration(r.duration_seconds)]
        for r in records
    ]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _state(step: StepState) -> str:
    """'succeeded with 3 failed' for a step some records did not get through."""
    parts = [f"{n} {what}" for n, what in ((step.failed, "failed"), (step.skipped, "skipped")) if n]
    return f"{step.state} with {' and '.join(parts)}" if parts else step.state


def steps_table(record: RunRecord | None) -> pd.DataFrame:
    rows = [] if record is None else [
        [s.name, _state(s), s.rows, s.work, s.error or ""] for s in record.steps]
    return pd.DataFrame(rows, columns=STEP_COLUMNS)


def run_summary(record: RunRecord) -> str:
    c = record.counts
    alarm = "⚠️ " if record.status == "failed" or c.get("failed") else ""  # failures stand out, never read as done
    lines = [
        f"### {alarm}Run `{record.id}` — **{record.status}**",
        f"Workflow **{record.workflow}** v{record.workflow_version} · created {_when(record.created_at)} UTC"
        + (f" · took {_duration(record.duration_seconds)}" if record.duration_seconds is not None else ""),
        f"Records: in {c.get('in', 0)} · valid {c.get('valid', 0)} · quarantined {c.get('quarantined', 0)}"
        f" · augmented {c.get('augmented', 0)} · failed {c.get('failed', 0)} · skipped {c.get('skipped', 0)}",
    ]
    out = record.output
    if out:
        if out.get("partial"):
            paths = [f"output: {out.get('rows_written')} record(s) written, not catalogued, at {out.get('path')}"]
        else:
            paths = [f"output: {out.get('dataset')} v{out.get('version')} at {out.get('path')}"]
        paths += [
            f"{label}: {out[key]}"
            for key, label in (("quarantine_path", "quarantine"), ("csv_path", "csv export"))
            if out.get(key)
        ]
        lines.append("**Output**\n\n" + _code("\n".join(paths)))
    if record.error:
        lines.append("#### ⚠️ Error\n\n" + _code(record.error))
    return "\n\n".join(lines)


def list_view(list_runs: Callable[[], list[RunRecord]], chosen: str | None) -> tuple[str, Any, Any]:
    """(status message, runs table, run choices); on failure the table and choices are left as they were."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%H:%M:%S")
    try:
        records = list_runs()
    except Exception as exc:  # shown to the user next to the last runs that loaded
        return f"⚠️ **Could not load runs** ({now} UTC): {type(exc).__name__}: {exc}", gr.skip(), gr.skip()
    if records:
        message = f"{len(records)} most recent run(s) · refreshed {now} UTC"
    else:
        message = "No runs yet. Start one with `augment run <workflow.yaml>`."
    return message, runs_table(records), gr.update(choices=[r.id for r in records], value=chosen)


def run_view(get_run: Callable[[str], RunRecord], run_id: str | None) -> tuple[str, pd.DataFrame]:
    """(summary, steps table) of one run, or a visible reason why it cannot be shown."""
    if not run_id or not run_id.strip():
        return NO_RUN_CHOSEN, steps_table(None)
    try:
        record = get_run(run_id.strip())
    except KeyError as exc:
        return f"⚠️ **{exc.args[0] if exc.args else exc}**", steps_table(None)
    except Exception as exc:  # shown to the user instead of a blank detail
        return f"⚠️ **Could not load run {run_id}**: {type(exc).__name__}: {exc}", steps_table(None)
    return run_summary(record), steps_table(record)


def _row_run_id(event: gr.SelectData) -> str:
    return str(event.row_value[0])


def build_runs_panel(
    list_runs: Callable[[], list[RunRecord]],
    get_run: Callable[[str], RunRecord],
    *,
    refresh_seconds: float = 5.0,
) -> gr.Blocks:
    """The panel's Blocks; `get_run` raises KeyError (with a message) for an unknown run id."""
    refresh = functools.partial(list_view, list_runs)
    show = functools.partial(run_view, get_run)
    with gr.Blocks(title="augment · runs") as panel:
        gr.Markdown("## Runs")
        status = gr.Markdown("Loading runs…", elem_id="runs-status")
        with gr.Row():
            refresh_button = gr.Button("Refresh", scale=0)
        table = gr.Dataframe(
            value=runs_table([]), headers=RUN_COLUMNS, interactive=False, elem_id="runs-table", max_height=420,
        )
        chosen = gr.Dropdown(
            label="Run", choices=[], value=None, allow_custom_value=True, elem_id="run-choice",
            info="Pick a run, type an id (or the start of one), or click a row above.",
        )
        detail = gr.Markdown(NO_RUN_CHOSEN, elem_id="run-detail")
        steps = gr.Dataframe(
            value=steps_table(None), headers=STEP_COLUMNS, interactive=False, elem_id="run-steps", label="Steps",
        )
        timer = gr.Timer(refresh_seconds)

        listing = [status, table, chosen]
        showing = [detail, steps]
        panel.load(refresh, chosen, listing).then(show, chosen, showing)
        refresh_button.click(refresh, chosen, listing).then(show, chosen, showing)
        timer.tick(refresh, chosen, listing, show_progress="hidden").then(show, chosen, showing, show_progress="hidden")
        chosen.input(show, chosen, showing)
        table.select(_row_run_id, None, chosen).then(show, chosen, showing)
    return panel
