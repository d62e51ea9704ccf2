"""The `workflows` Serve application: the workflow editor (ui.workflows) on the panel framework,
for operators. It edits the specs of the workflows folder (AUGMENT_WORKFLOWS_DIR, which the API
and `augment run` read too) and keeps every saved version in the metadata store
(pipelines/workflows/editing.py). A run is launched as a Ray job whose entrypoint is the
`augment run` a user would `ray job submit`.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, cast

import gradio as gr
from pydantic import Field
from ray import serve
from ray.job_submission import JobSubmissionClient
from ray.serve import Application, Deployment

from actors.runs import new_run_id
from augment_core.audit import record
from augment_core.identity import Role
from augment_core.storage import StoragePaths
from augment_core.store import open_store
from augment_core.workflow_history import WorkflowHistory, WorkflowVersion
from pipelines.operations.preview import preview
from pipelines.operations.preview_result import Preview
from pipelines.spec.workflow import WorkflowSpec
from pipelines.workflows.editing import EditError, FolderSpec, check_text, import_folder, save, spec_files
from pipelines.workflows.loader import preflight
from serve_apps.gateway.panels import PanelApp, PanelArgs
from ui.workflows import WorkflowEditing, build_workflows_panel


class WorkflowsPanelArgs(PanelArgs):
    workflows_dir: str | None = Field(default=None, description="Edit this folder instead of AUGMENT_WORKFLOWS_DIR.")


@serve.deployment(num_replicas=2, max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.05})
@serve.ingress()
class WorkflowsPanel(PanelApp):
    title = "Workflows"
    role = Role.operator

    def __init__(self, args: WorkflowsPanelArgs) -> None:
        super().__init__(args)
        self.folder = Path(args.workflows_dir or self.settings.workflows_dir)

    def _history(self) -> WorkflowHistory:
        return WorkflowHistory(open_store(self.settings))

    def _path(self, file: str) -> Path:
        """A spec file of the folder, by name only: nothing outside the folder is read."""
        if file not in {p.name for p in spec_files(self.folder)}:
            raise EditError([f"(file): no workflow file {file!r} in the workflows folder"])
        return self.folder / file

    def list_specs(self) -> list[FolderSpec]:
        return import_folder(self._history(), self.folder)

    def read(self, file: str) -> str:
        return self._path(file).read_text(encoding="utf-8", errors="replace")

    def check(self, file: str, text: str) -> tuple[WorkflowSpec | None, list[str]]:
        return check_text(text, self.folder, file)

    def versions(self, workflow: str) -> list[WorkflowVersion]:
        return self._history().versions(workflow)

    def preview(self, file: str, text: str, rows: int) -> Preview:
        """`augment preview` on the editor's text: the requests of the first records, built, not sent."""
        spec, errors = check_text(text, self.folder, file)
        if spec is None:
            raise EditError(errors)
        preflight(spec, file)
        return preview(spec, rows, StoragePaths(self.settings))

    def save(self, file: str, text: str, user: str, based_on: int | None) -> WorkflowVersion:
        actor, store = f"{user} (session)", open_store(self.settings)
        try:
            saved = save(WorkflowHistory(store), self.folder, self._path(file).name, text, actor, based_on)
        except EditError as exc:
            record(store, actor, "workflow.save", file, "refused", "; ".join(exc.errors)[:500])
            raise
        record(store, actor, "workflow.save", f"{saved.workflow} v{saved.version}", detail=file)
        return saved

    def launch(self, file: str, user: str) -> str:
        """A Ray job running `augment run` on the saved file, with a run id chosen here to link to."""
        path = self._path(file)
        actor, store = f"{user} (session)", open_store(self.settings)
        spec, errors = check_text(self.read(file), self.folder, file)
        if spec is None:
            raise EditError(errors)
        preflight(spec, file)  # a missing input is refused here, not in a job's log
        run_id = new_run_id()
        entrypoint = f"augment run --run-id {run_id} {shlex.quote(str(path.resolve()))}"
        try:
            job = JobSubmissionClient().submit_job(entrypoint=entrypoint, submission_id=f"augment-{run_id}")
        except Exception as exc:  # the dashboard's words may name hosts: the kind is enough here
            record(store, actor, "run.launch", f"{spec.name} v{spec.version}", "failed", type(exc).__name__)
            raise RuntimeError(f"the cluster did not take the job ({type(exc).__name__})") from None
        record(store, actor, "run.launch", run_id, detail=f"workflow {spec.name} v{spec.version}, job {job}")
        return run_id

    def run_url(self, run_id: str) -> str:
        return f"{self.args.prefix}/ui/runs/?run={run_id}"

    def health(self) -> str:
        if not self.folder.is_dir():
            return f"the workflows folder {self.folder.name!r} is missing"
        open_store(self.settings).list_runs(limit=1)  # the store answers
        return "ok"

    def blocks(self) -> gr.Blocks:
        return build_workflows_panel(WorkflowEditing(
            list_specs=self.list_specs, read=self.read, check=self.check, history=self.versions,
            preview=self.preview, save=self.save, launch=self.launch, run_url=self.run_url,
        ))


def build_app(args: dict[str, Any]) -> Application:
    # The decorators made the class a Deployment (mypy does not apply class decorators).
    return cast(Deployment, WorkflowsPanel).bind(WorkflowsPanelArgs.model_validate(args))
