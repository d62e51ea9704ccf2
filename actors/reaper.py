"""The reaper: one detached actor per metadata store on a cluster that fails, on a timer, the runs
whose heartbeat stopped (their driver or coordinator died), so that no run stays 'running'.

Why here, and only here: reaping is a write, and reads (the API, the panels, `augment status`,
event followers) must not write. A detached actor lives as long as the cluster where the runs
live, and is restarted if its node goes; every start of a run or a stream consumer makes sure it
is there (`ensure_reaper`). Runs then end 'failed' at most stale_after_seconds + one interval
after their last beat. Without a cluster no run can be live, and a CLI read reaps once instead
(augment_cli.common.reap_when_no_cluster).

It reaps with the settings of the process that started it: every process of a cluster shares
them (cluster.local.cluster_env). Every gc_interval_minutes it also runs retention
(augment_core/retention.py, what `augment gc` does), from a thread of its own: a pass that fails
is logged and tried again at the next interval, and never stops the reaping.
"""

from __future__ import annotations

import hashlib
import logging
import threading

import ray
from ray.actor import ActorHandle

from actors.detached import ensure_detached
from actors.naming import reaper_name
from augment_core.errors import describe_error
from augment_core.retention import GcReport, collect_garbage
from augment_core.settings import Settings
from augment_core.store import open_store

log = logging.getLogger(__name__)


def reap_interval(settings: Settings) -> float:
    """How often the reaper looks: at least once a heartbeat, and four times per stale window."""
    return max(0.5, min(settings.heartbeat_seconds, settings.stale_after_seconds / 4))


class Reaper:
    """Calls MetadataStore.reap_stale_runs every reap_interval, from a thread of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._failing = False  # the store is unreachable: said once, not every interval
        self._stop = threading.Event()
        threading.Thread(target=self._loop, name="reaper", daemon=True).start()
        if settings.gc_interval_minutes > 0:
            threading.Thread(target=self._gc_loop, name="gc", daemon=True).start()

    def reap(self) -> list[str]:
        """One pass: the ids of the runs it failed (none while the store is unreachable)."""
        try:
            reaped = open_store(self.settings).reap_stale_runs(self.settings.stale_after_seconds)
        except Exception as exc:  # the database is down or restarting: the next pass tries again
            if not self._failing:
                log.warning("reaping runs: the metadata store is unreachable: %s", describe_error(exc))
            self._failing = True
            return []
        if self._failing:
            log.warning("reaping runs: the metadata store is reachable again")
        self._failing = False
        for run_id in reaped:
            log.warning("run %s failed: no heartbeat for more than %gs", run_id, self.settings.stale_after_seconds)
        return reaped

    def collect_garbage(self) -> GcReport | None:
        """One retention pass; None when it failed as a whole (logged: the next interval tries again)."""
        try:
            report = collect_garbage(self.settings)
        except Exception as exc:  # noqa: BLE001 - retention must never take the reaper down
            log.warning("retention pass failed: %s", describe_error(exc))
            return None
        if any(report.removed.values()) or report.errors:
            log.warning("retention %s%s", report.summary(),
                        f"; failed: {report.errors}" if report.errors else "")
        return report

    def close(self) -> None:
        self._stop.set()

    def _gc_loop(self) -> None:
        while not self._stop.wait(self.settings.gc_interval_minutes * 60):
            self.collect_garbage()

    def _loop(self) -> None:
        while not self._stop.wait(reap_interval(self.settings)):
            self.reap()


# Restarted when it dies (its node went): reaping is idempotent and starts over with the next pass.
ReaperActor = ray.remote(num_cpus=0, max_restarts=-1)(Reaper)


def ensure_reaper(settings: Settings) -> ActorHandle:
    """The reaper of this metadata store on this cluster, started if there is none."""
    return ensure_detached(ReaperActor, reaper_name(store_key(settings.database_url)), settings)


def store_key(database_url: str) -> str:
    """A short digest of the store's URL: actor names show on the dashboard, a URL may hold a password."""
    return hashlib.sha256(database_url.encode()).hexdigest()[:16]
