"""POST /v1/runs and POST /v1/runs/{id}/resume (operator): start a run of a workflow of the API's
workflows folder by name, or carry on a run that failed or was cancelled — what `augment run` and
`augment resume` do, answered 202 with the run at once (follow it with GET /v1/runs/{id} or its
events). Every attempt is audited, refused ones too.

The run's coordinator belongs to this replica's process, as a CLI run's belongs to its driver: the
replica holds its handle until the run ends. A replica that goes away (redeployed, scaled down)
takes the coordinators of its running runs with it; they end as lost, and resume like any other.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import ray
from fastapi import APIRouter, HTTPException, status

from actors.runs import Launched, ResumeError, refuse_unresumable, resume_run, start_run
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

router = APIRouter(prefix="/runs", tags=["runs"], route_class=JsonBodyRoute)
log = logging.getLogger(__name__)
NO_CLUSTER = ("this API replica is not on a Ray cluster, so it cannot {what} runs: deploy it with"
              " `augment serve`, or use `augment {command}` on the cluster's machine")
LAUNCH_RESPONSES: dict[int | str, dict[str, str]] = {
    404: {"description": "No such workflow or run"},
    409: {"description": "It cannot run now (broken spec, missing input, already running or succeeded)"},
    503: {"description": "This replica has no Ray cluster, or the run's coordinator could not start"},
}


class LaunchedRuns:
    """The runs this replica started, held until each ends: Ray reclaims an actor once no handle
    of it is left, and a run's coordinator is such an actor."""

    def __init__(self) -> None:
        self._runs: dict[str, Launched] = {}
        self._lock = threading.Lock()

    def keep(self, run_id: str, launched: Launched) -> None:
        with self._lock:
            finals = [final for _, final in self._runs.values()]
            if finals:
                done, _ = ray.wait(finals, num_returns=len(finals), timeout=0)
                self._runs = {k: v for k, v in self._runs.items() if v[1] not in done}
            self._runs[run_id] = launched


_launched = LaunchedRuns()


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=RunOut, responses=LAUNCH_RESPONSES)
def start(body: RunStart, caller: Operator, settings: SettingsDep, store: StoreDep,
          workflows: WorkflowsDep) -> RunOut:
    """Start a run of the named workflow, as `augment run` does with its file."""
    action = "run.start"
    try:
        spec, file = _runnable(workflows, body.workflow, store)
        _need_cluster("start", "run")
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
    action = "run.resume"
    try:
        try:
            refuse_unresumable(store.find_run(run_id))  # before asking for a cluster
            _need_cluster("resume", "resume")
            resumed, launched = resume_run(settings, run_id)
        except KeyError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None
        except ResumeError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except HTTPException as exc:
        _audit_refusal(store, caller.label, action, run_id, exc)
        raise
    _launched.keep(resumed.id, launched)
    record(store, caller.label, action, resumed.id, detail=f"resume {resumed.resumes}")
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


def _need_cluster(what: str, command: str) -> None:
    if not ray.is_initialized():
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, NO_CLUSTER.format(what=what, command=command))


def _audit_refusal(store: MetadataStore, actor: str, action: str, target: str, exc: HTTPException) -> None:
    outcome: Outcome = "failed" if exc.status_code >= 500 else "refused"
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail.get("message", exc.detail))
    record(store, actor, action, target, outcome, f"{exc.status_code}: {detail}")
