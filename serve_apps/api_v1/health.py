"""GET /v1/health: is the API able to serve, and is its metadata store answering? The one route
open to anyone (load balancers, liveness probes), so it says no more than that: no driver errors,
host names or counts.

The store is asked at most once per PROBE_SECONDS per replica: probes that come faster (every load
balancer and monitor asking every few milliseconds) get the last answer, without a query or a hop
to the thread pool (docs/benchmarks.md, "Speed round, part 3")."""

from __future__ import annotations

import logging
import threading
import time

from fastapi import APIRouter, Request, Response, status
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from augment_core.settings import Settings
from augment_core.store import describe_db_error, open_store
from serve_apps.api_v1.schemas import Health

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])
PROBE_SECONDS = 1.0


class StoreProbe:
    """Whether the store answered a real query on the runs table, asked at most every `seconds`."""

    def __init__(self, settings: Settings, seconds: float = PROBE_SECONDS) -> None:
        self.settings, self.seconds = settings, seconds
        self._lock = threading.Lock()
        self._answer: tuple[float, bool] | None = None  # (asked at, answered)

    def recent(self) -> bool | None:
        """The last answer while it is fresh; None when the store must be asked again."""
        answer = self._answer
        return answer[1] if answer is not None and time.monotonic() - answer[0] < self.seconds else None

    def ask(self) -> bool:
        with self._lock:  # probes that arrive together share one query
            recent = self.recent()
            if recent is not None:
                return recent
            try:
                open_store(self.settings).list_runs(limit=1)
                ok = True
            except SQLAlchemyError as exc:
                # the reason stays in the log
                log.warning("health: metadata store unavailable: %s", describe_db_error(exc))
                ok = False
            self._answer = (time.monotonic(), ok)
            return ok


def store_probe(request: Request) -> StoreProbe:
    probe = getattr(request.app.state, "store_probe", None)
    if probe is None:
        probe = request.app.state.store_probe = StoreProbe(request.app.state.settings)
    return probe


@router.get("/health", response_model=Health)
async def health(request: Request, response: Response) -> Health:
    probe = store_probe(request)
    ok = probe.recent()
    if ok is None:
        ok = await run_in_threadpool(probe.ask)
    if ok:
        return Health(status="ok", store="ok")
    response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="unavailable", store="unavailable")
