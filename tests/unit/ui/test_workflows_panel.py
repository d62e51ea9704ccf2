"""The workflow editor's views (ui/workflows.py) over plain functions: errors by path, refusals
with why, never a blank page; a launch refused while the editor holds unsaved changes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import gradio as gr

from augment_core.workflow_history import WorkflowVersion
from pipelines.operations.preview_result import Preview, StepEstimate
from pipelines.workflows.editing import EditError, FolderSpec, check_text
from tests.conftest import SAMPLE_SPEC
from ui.workflows import (
    WorkflowEditing,
    build_workflows_panel,
    check_view,
    launch_view,
    list_view,
    preview_view,
    save_view,
)

FOLDER = SAMPLE_SPEC.parent
TEXT = SAMPLE_SPEC.read_text(encoding="utf-8")


def editing(**overrides: Any) -> WorkflowEditing:
    launched: list[str] = []

    def save(file: str, text: str, user: str, based_on: int | None) -> WorkflowVersion:
        return WorkflowVersion(workflow="organisations", version=(based_on or 0) + 1, file=file, text=text,
                               sha256="x", author=f"{user} (session)", created_at=dt.datetime.now(dt.timezone.utc))

    values: dict[str, Any] = dict(
        list_specs=lambda: [FolderSpec("organisations.yaml", "organisations", 1, (), ""),
                            FolderSpec("broken.yaml", "broken", 1, ("steps[0].use: unknown",), "")],
        read=lambda file: TEXT, check=lambda file, text: check_text(text, FOLDER, file),
        history=lambda workflow: [], preview=lambda file, text, rows: Preview(rows_in=3, valid=2),
        save=save, launch=lambda file, user: launched.append(user) or "20260102-030405-0a1b2c3d",
        run_url=lambda run_id: f"/augment/ui/runs/?run={run_id}",
    )
    return WorkflowEditing(**(values | overrides))


def test_the_list_says_which_files_need_attention() -> None:
    message, table, choices = list_view(editing())
    assert message == "2 workflow(s) · ⚠ 1 need attention"
    assert table["state"].tolist() == ["ok", "⚠ 1 error(s)"] and choices["choices"] == ["organisations.yaml",
                                                                                        "broken.yaml"]
    failed, table, _ = list_view(editing(list_specs=lambda: (_ for _ in ()).throw(OSError("folder gone"))))
    assert failed.startswith("⚠️ **Could not list the workflows**: OSError: folder gone") and table == gr.skip()


def test_every_edit_is_checked_and_errors_carry_their_paths() -> None:
    assert check_view(editing(), "organisations.yaml", TEXT).startswith("✓ **Valid**: workflow **organisations**")
    broken = TEXT.replace("params: {column: website}", "params: {column: website, bogus: 1}")
    verdict = check_view(editing(), "organisations.yaml", broken)
    assert verdict.startswith("### ⚠️ 1 error(s)") and "steps[1].params.bogus" in verdict
    assert "invalid YAML" in check_view(editing(), "organisations.yaml", "name: [")


def test_preview_save_and_launch_say_what_happened_or_why_not() -> None:
    estimate = Preview(rows_in=3, valid=2, steps=[StepEstimate("profile", "fake", "m", requests=2, cost_max_usd=0.5)],
                       samples=[{"record": 1, "step": "profile", "request": {"model": "m"}}])
    shown = preview_view(editing(preview=lambda *_: estimate), "organisations.yaml", TEXT, 2)
    assert "| profile | fake | m | 2 |" in shown and "**At most $0.5000**" in shown and '"model": "m"' in shown

    text, outcome, based_on, _ = save_view(editing(), "organisations.yaml", TEXT, 1, "ana")
    assert outcome.startswith("✓ Saved **organisations** as version **2**") and based_on == 2
    refused = editing(save=lambda *_: (_ for _ in ()).throw(EditError(["steps[0].use: unknown", "sink: missing"])))
    _, outcome, based_on, _ = save_view(refused, "organisations.yaml", TEXT, 1, "ana")
    assert "Not saved" in outcome and "steps[0].use: unknown\nsink: missing" in outcome and based_on == 1

    assert launch_view(editing(), "organisations.yaml", TEXT + "# unsaved\n", "ana").startswith("⚠️ **Save first**")
    launched = launch_view(editing(), "organisations.yaml", TEXT, "ana")
    assert "Run `20260102-030405-0a1b2c3d` launched" in launched
    assert "(/augment/ui/runs/?run=20260102-030405-0a1b2c3d)" in launched


def test_the_panel_builds_without_serve() -> None:
    assert isinstance(build_workflows_panel(editing()), gr.Blocks)
