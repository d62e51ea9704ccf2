"""The workflow editor: the workflows of the folder with their state, one open in a YAML editor
that is checked on every edit (errors by path, as `augment run` reports them), a preview of the
requests a run would send and what it may cost (nothing is called), saving as a new version with
its history and diffs, and launching a run of the saved version on the cluster.

Built from the functions of `WorkflowEditing`, so it knows nothing of Serve, Ray or the store.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from augment_core.workflow_history import WorkflowVersion
from pipelines.operations.preview_result import Preview
from pipelines.spec.workflow import WorkflowSpec
from pipelines.workflows.editing import FolderSpec, unified_diff

LIST_COLUMNS = ["file", "workflow", "version", "state"]
HISTORY_COLUMNS = ["version", "saved by", "saved at (UTC)"]
NOTHING_OPEN = "Choose a workflow to edit."


@dataclass(frozen=True)
class WorkflowEditing:
    """What the editor does, as the signed-in user (by name); each raises an exception whose
    message says why it could not (an `EditError` carries every error by path)."""

    list_specs: Callable[[], list[FolderSpec]]
    read: Callable[[str], str]  # file -> its text
    check: Callable[[str, str], tuple[WorkflowSpec | None, list[str]]]  # (file, text)
    history: Callable[[str], list[WorkflowVersion]]  # workflow -> its versions, newest first
    preview: Callable[[str, str, int], Preview]  # (file, text, rows)
    save: Callable[[str, str, str, int | None], WorkflowVersion]  # (file, text, user, based on)
    launch: Callable[[str, str], str]  # (file, user) -> the run id; the link is built by `run_url`
    run_url: Callable[[str], str]


def _when(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _code(text: str) -> str:
    return "```text\n" + text.replace("```", "'''") + "\n```"


def _errors(exc: Exception) -> list[str]:
    return list(getattr(exc, "errors", None) or [f"{type(exc).__name__}: {exc}"])


def spec_state(spec: FolderSpec) -> str:
    if spec.errors:
        return f"⚠ {len(spec.errors)} error(s)"
    return "⚠ changed outside augment" if spec.drift else "ok"


def list_view(editing: WorkflowEditing) -> tuple[str, Any, Any]:
    """(message, table, file choices); on failure the table and choices stay as they were."""
    try:
        specs = editing.list_specs()
    except Exception as exc:  # shown beside the last list that loaded
        return f"⚠️ **Could not list the workflows**: {type(exc).__name__}: {exc}", gr.skip(), gr.skip()
    rows = [[s.file, s.workflow, s.version if s.version is not None else "", spec_state(s)] for s in specs]
    broken = sum(1 for s in specs if s.errors or s.drift)
    message = f"{len(specs)} workflow(s)" + (f" · ⚠ {broken} need attention" if broken else "")
    return message, pd.DataFrame(rows, columns=LIST_COLUMNS), gr.update(choices=[s.file for s in specs])


def check_view(editing: WorkflowEditing, file: str | None, text: str | None) -> str:
    """A verdict on the text as it is now: the spec it makes, or every error by path."""
    if not file:
        return NOTHING_OPEN
    try:
        spec, errors = editing.check(file, text or "")
    except Exception as exc:
        return f"⚠️ **Could not check**: {type(exc).__name__}: {exc}"
    if spec is None:
        return f"### ⚠️ {len(errors)} error(s)\n\n" + _code("\n".join(errors))
    return (f"✓ **Valid**: workflow **{spec.name}** (version {spec.version} in the text) · {len(spec.steps)} step(s)"
            f" · source {spec.source.kind} · sink {spec.sink.dataset}")


def history_view(editing: WorkflowEditing, workflow: str | None) -> tuple[pd.DataFrame, list[WorkflowVersion]]:
    versions = editing.history(workflow) if workflow else []
    rows = [[v.version, v.author, _when(v.created_at)] for v in versions]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS), versions


def diff_view(versions: list[WorkflowVersion], version: int | None) -> str:
    """The chosen version against the one before it."""
    chosen = next((v for v in versions if v.version == version), None)
    if chosen is None:
        return ""
    before = next((v for v in versions if v.version < chosen.version), None)
    if before is None:
        return f"(version {chosen.version} is the first kept)"
    return unified_diff(before.text, chosen.text, f"version {before.version}", f"version {chosen.version}")


def open_view(editing: WorkflowEditing, file: str | None) -> tuple[Any, str, pd.DataFrame, Any, int | None, str]:
    """(editor text, verdict, history, history choices, the version it is based on, message)."""
    if not file:
        return "", NOTHING_OPEN, history_view(editing, None)[0], gr.update(choices=[]), None, ""
    try:
        text = editing.read(file)
        spec, _ = editing.check(file, text)
        table, versions = history_view(editing, spec.name if spec else None)
    except Exception as exc:
        return gr.skip(), f"⚠️ **Could not open {file}**: {type(exc).__name__}: {exc}", gr.skip(), gr.skip(), None, ""
    based_on = versions[0].version if versions else None
    return (text, check_view(editing, file, text), table, gr.update(choices=[v.version for v in versions], value=None),
            based_on, f"Opened **{file}**" + (f" (version {based_on})" if based_on else ""))


def preview_view(editing: WorkflowEditing, file: str | None, text: str | None, rows: float) -> str:
    if not file:
        return NOTHING_OPEN
    try:
        result = editing.preview(file, text or "", int(rows))
    except Exception as exc:
        return "### ⚠️ Cannot preview\n\n" + _code("\n".join(_errors(exc)))
    lines = [f"**Preview** (nothing was sent): {result.rows_in} record(s) in, {result.valid} valid."]
    if not result.steps:
        lines.append("No step of this workflow calls a provider.")
    else:
        header = "| step | provider | model | requests | tokens in | out (max) | cost (max) |\n" + "|---" * 7 + "|"
        lines.append(header + "".join(f"\n| {s.step} | {s.provider} | {s.model or '-'} | {s.requests} |"
                                      f" {s.tokens_in} |"
                                      f" {s.tokens_out_max} | ${s.cost_max_usd:.4f} |" for s in result.steps))
        lines.append(f"**At most ${result.cost_max_usd:.4f}** for the whole input (every reply at max_tokens,"
                     " no cache hit).")
    for sample in result.samples:
        lines.append(f"Record {sample['record']} · step `{sample['step']}`\n\n```json\n"
                     f"{json.dumps(sample['request'], indent=2, ensure_ascii=False)}\n```")
    return "\n\n".join(lines)


def save_view(editing: WorkflowEditing, file: str | None, text: str | None, based_on: int | None,
              user: str) -> tuple[Any, str, int | None, str]:
    """(editor text as saved, outcome, the new version it is based on, verdict)."""
    if not file:
        return gr.skip(), NOTHING_OPEN, based_on, NOTHING_OPEN
    try:
        saved = editing.save(file, text or "", user, based_on)
    except Exception as exc:
        return gr.skip(), "### ⚠️ Not saved\n\n" + _code("\n".join(_errors(exc))), based_on, gr.skip()
    return (saved.text, f"✓ Saved **{saved.workflow}** as version **{saved.version}** ({file}).", saved.version,
            check_view(editing, file, saved.text))


def same_text(a: str, b: str) -> bool:
    """Equal but for line endings and the final newline (the browser's editor drops it)."""
    def norm(text: str) -> str:
        return text.replace("\r\n", "\n").rstrip("\n")
    return norm(a) == norm(b)


def launch_view(editing: WorkflowEditing, file: str | None, text: str | None, user: str) -> str:
    """A run of the file as saved; refused while the editor holds unsaved changes."""
    if not file:
        return NOTHING_OPEN
    try:
        if not same_text(text or "", editing.read(file)):
            return "⚠️ **Save first**: a run reads the saved file, and the editor holds changes that are not saved."
        run_id = editing.launch(file, user)
    except Exception as exc:
        return "### ⚠️ Not launched\n\n" + _code("\n".join(_errors(exc)))
    return f"✓ Run `{run_id}` launched as a Ray job. [Follow it in the runs panel]({editing.run_url(run_id)})"


def build_workflows_panel(editing: WorkflowEditing) -> gr.Blocks:
    def listing() -> tuple[str, Any, Any]:
        return list_view(editing)

    def opened(file: str | None) -> tuple[Any, str, pd.DataFrame, Any, int | None, str]:
        return open_view(editing, file)

    def checked(file: str | None, text: str | None) -> str:
        return check_view(editing, file, text)

    def previewed(file: str | None, text: str | None, rows: float) -> str:
        return preview_view(editing, file, text, rows)

    def saved(file: str | None, text: str | None, based_on: int | None,
              request: gr.Request) -> tuple[Any, str, int | None, str]:
        return save_view(editing, file, text, based_on, request.username or "")

    def launched(file: str | None, text: str | None, request: gr.Request) -> str:
        return launch_view(editing, file, text, request.username or "")

    def history(file: str | None, text: str | None) -> tuple[pd.DataFrame, Any, list[WorkflowVersion]]:
        spec, _ = editing.check(file, text or "") if file else (None, [])
        table, versions = history_view(editing, spec.name if spec else None)
        return table, gr.update(choices=[v.version for v in versions], value=None), versions

    with gr.Blocks(title="augment · workflows") as panel:
        gr.Markdown("## Workflows")
        message = gr.Markdown("Loading workflows…", elem_id="workflows-status")
        table = gr.Dataframe(headers=LIST_COLUMNS, interactive=False, elem_id="workflows-table", label="Workflows")
        with gr.Row(equal_height=True):
            chosen = gr.Dropdown(label="Workflow file", choices=[], value=None, elem_id="workflow-file", scale=3)
            refresh = gr.Button("Refresh", scale=0)
        opened_note = gr.Markdown("")
        verdict = gr.Markdown(NOTHING_OPEN, elem_id="workflow-verdict")  # above the editor: seen while typing
        editor = gr.Code(label="Spec (YAML)", language="yaml", interactive=True, lines=20, max_lines=32,
                         elem_id="workflow-editor")
        based_on = gr.State(None)
        versions = gr.State([])
        with gr.Row():
            rows = gr.Slider(1, 10, value=2, step=1, label="Sample records to preview", scale=2)
            preview_button = gr.Button("Preview", scale=0, elem_id="workflow-preview")
            save_button = gr.Button("Save as new version", variant="primary", scale=0, elem_id="workflow-save")
            launch_button = gr.Button("Launch run", scale=0, elem_id="workflow-launch")
        outcome = gr.Markdown("", elem_id="workflow-outcome")
        with gr.Accordion("Preview", open=True):
            preview = gr.Markdown("", elem_id="workflow-preview-result")
        with gr.Accordion("History", open=False):
            history_table = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, elem_id="workflow-history",
                                         label="Versions")
            version = gr.Dropdown(label="Show the changes of version", choices=[], value=None,
                                  elem_id="workflow-version")
            diff = gr.Code(label="Diff against the version before", language=None, interactive=False,
                           elem_id="workflow-diff")

        listed = [message, table, chosen]
        panel.load(listing, None, listed, api_name="list_workflows")
        refresh.click(listing, None, listed, api_visibility="private")
        chosen.input(opened, chosen, [editor, verdict, history_table, version, based_on, opened_note],
                     api_name="open_workflow").then(history, [chosen, editor], [history_table, version, versions],
                                                    api_visibility="private")
        editor.change(checked, [chosen, editor], verdict, api_name="check_workflow", trigger_mode="always_last",
                      show_progress="hidden")
        preview_button.click(previewed, [chosen, editor, rows], preview, api_name="preview_workflow")
        save_button.click(saved, [chosen, editor, based_on], [editor, outcome, based_on, verdict],
                          api_name="save_workflow").then(
            history, [chosen, editor], [history_table, version, versions], api_visibility="private").then(
            listing, None, listed, api_visibility="private")
        launch_button.click(launched, [chosen, editor], outcome, api_name="launch_run")
        version.input(diff_view, [versions, version], diff, api_visibility="private")
    return panel
