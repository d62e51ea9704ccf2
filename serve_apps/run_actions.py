"""Cancelling and resuming a run from a Serve replica — the API's routes and the runs panel's
buttons both go through here, so both audit every attempt the same way, refused ones too.

A run resumed here has its coordinator owned by this replica's process, as a CLI run's belongs to
its driver: the replica holds its handle until the run ends (`LaunchedRuns`). A replica that goes
away (redeployed, scaled down) takes the coordinators of its running runs with it; they end as
lost, and resume like any other.
"""

from __future__ import annotations

import threading

import ray

from actors.runs import CancelError, Launched, ResumeError, cancel_run, refuse_unresumable, resume_run
from augment_core.audit import record
from augment_core.settings import Settings
from augment_core.store import MetadataStore, RunRecord
from serve_apps.refusal import ActionRefused

NO_CLUSTER = ("this replica is not on a Ray cluster, so it cannot {what} runs: deploy it with"
              " `augment serve`, or use `augment {command}` on the cluster's machine")


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


def need_cluster(what: str, command: str) -> None:
    if not ray.is_initialized():
        raise ActionRefused(503, NO_CLUSTER.format(what=what, command=command))


def cancel(settings: Settings, store: MetadataStore, actor: str, run_id: str) -> RunRecord:
    """Stop a pending or running run: it ends 'cancelled', keeping what it wrote."""
    try:
        cancelled = cancel_run(settings, run_id)
    except KeyError as exc:
        raise ActionRefused(404, str(exc.args[0])) from None
    except CancelError as exc:
        record(store, actor, "run.cancel", run_id, "refused", str(exc))
        raise ActionRefused(409, str(exc)) from None
    record(store, actor, "run.cancel", cancelled.id)
    return cancelled


def resume(settings: Settings, store: MetadataStore, actor: str, run_id: str, launched: LaunchedRuns) -> RunRecord:
    """Carry on a run that failed or was cancelled, as `augment resume` does: the same run id and
    output folder; records already written are not done again."""
    action = "run.resume"
    try:
        try:
            refuse_unresumable(store.find_run(run_id))  # before asking for a cluster
            need_cluster("resume", "resume")
            resumed, handle = resume_run(settings, run_id)
        except KeyError as exc:
            raise ActionRefused(404, str(exc.args[0])) from None
        except ResumeError as exc:
            raise ActionRefused(409, str(exc)) from None
    except ActionRefused as exc:
        record(store, actor, action, run_id, "failed" if exc.status >= 500 else "refused", f"{exc.status}: {exc}")
        raise
    launched.keep(resumed.id, handle)
    record(store, actor, action, resumed.id, detail=f"resume {resumed.resumes}")
    return resumed
