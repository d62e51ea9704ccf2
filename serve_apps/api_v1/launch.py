"""POST /v1/runs and POST /v1/runs/{id}/resume (operator): start a run of a workflow of the API's
workflows folder by name, or carry on a run that failed or was cancelled — what `augment run` and
`augment resume` do, answered 202 with the run at once (follow it with GET /v1/runs/{id} or its
events). Every attempt is audited, refused ones too.

The run's coordinator belongs to this replica's process (serve_apps/run_actions.py, which the runs
panel's resume button goes through too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, HTTPException, status

from actors.runs import start_run
from augment_core.audit import Outcome, record
from augment_core.store import MetadataStore
from pipelines.io.dataset_source import resolve_dataset_source
from pipelines.io.files import SourceError
from pipelines.spec.errors import SpecError
from pipelines.spec.workflow import WorkflowSpec
from pipelines.workflows.folder import WorkflowFolder
from pipelines.workflows.loader import preflight
from serve_apps.api_v1.deps import SettingsDep, StoreDep, WorkflowsDep
from serve_apps.api_v1.errors import JsonBodyRoute
from serve_apps.api_v1.runs import RunId
from serve_apps.api_v1.schemas import RunOut, RunStart
from serve_apps.api_v1.workflows import workflows_unreadable
from serve_apps.gateway.api_auth import Operator
from serve_apps.refusal import ActionRefused
from serve_apps.run_actions import LaunchedRuns, need_cluster
from serve_apps.run_actions import resume as resume_run

router = APIRouter(prefix="/runs", tags=["runs"], route_class=JsonBodyRoute)
log = logging.getLogger(__name__)
LAUNCH_RESPONSES: dict[int | str, dict[str, str]] = {
    404: {"description": "No such workflow or run"},
    409: {"description": "It cannot run now (broken spec, missing input, already running or succeeded)"},
    503: {"description": "This replica has no Ray cluster, or the run's coordinator could not start"},
}


_launched = LaunchedRuns()


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=RunOut, responses=LAUNCH_RESPONSES)
def start(body: RunStart, caller: Operator, settings: SettingsDep, store: StoreDep,
          workflows: WorkflowsDep) -> RunOut:
    """Start a run of the named workflow, as `augment run` does with its file."""
    action = "run.start"
    try:
        spec, file = _runnable(workflows, body.workflow, store)
        _http(need_cluster, "start", "run")
        try:
            run_id, launched = start_run(settings, spec, str(file))
        except Exception as exc:  # Ray's words can name hosts: the log has them, the caller the kind
            log.exception("run of %s not started", spec.name)
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                f"the run's coordinator could not start ({type(exc).__name__}); the API's log"
                                " has the reason") from None
    except HTTPException as exc:
        _audit_refusal(store, caller.label, action, f"workflow {body.workflow}", exc)
        raise
    _launched.keep(run_id, launched)
    record(store, caller.label, action, run_id, detail=f"workflow {spec.name} v{spec.version}")
    return RunOut.from_record(store.get_run(run_id))


@router.post("/{run_id}/resume", status_code=status.HTTP_202_ACCEPTED, response_model=RunOut,
             responses=LAUNCH_RESPONSES)
def resume(run_id: RunId, caller: Operator, settings: SettingsDep, store: StoreDep) -> RunOut:
    """Carry on a run that failed or was cancelled, as `augment resume` does: the same run id and
    output folder; records already written are not done again."""
    try:
        resumed = resume_run(settings, store, caller.label, run_id, _launched)
    except ActionRefused as exc:
        raise HTTPException(exc.status, exc.message) from None
    return RunOut.from_record(resumed)


def _runnable(workflows: WorkflowFolder, name: str, store: MetadataStore) -> tuple[WorkflowSpec, Path]:
    """The workflow's spec, ready to run (a dataset source pinned to its version), and its file."""
    try:
        matches = [e for e in workflows.entries() if e.name == name]
    except OSError as exc:
        raise workflows_unreadable(exc) from None
    entry = next((e for e in matches if e.usable), matches[0] if matches else None)
    if entry is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no workflow named {name!r}")
    if not entry.usable or entry.spec is None:
        raise HTTPException(status.HTTP_409_CONFLICT, {"message": f"workflow {name!r} cannot run",
                                                       "errors": list(entry.errors)})
    spec = entry.spec.model_copy(deep=True)  # pinning the source changes it: not the folder's copy
    try:
        preflight(spec, entry.file.name)
        resolve_dataset_source(spec, store)
    except SpecError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, {"message": f"workflow {name!r} cannot run now",
                                                       "errors": exc.errors}) from None
    except SourceError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, {"message": f"workflow {name!r} cannot run now",
                                                       "errors": [str(exc)]}) from None
    return spec, entry.file


def _http(check: Callable[..., None], *args: str) -> None:
    try:
        check(*args)
    except ActionRefused as exc:
        raise HTTPException(exc.status, exc.message) from None


def _audit_refusal(store: MetadataStore, actor: str, action: str, target: str, exc: HTTPException) -> None:
    outcome: Outcome = "failed" if exc.status_code >= 500 else "refused"
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail.get("message", exc.detail))
    record(store, actor, action, target, outcome, f"{exc.status_code}: {detail}")
