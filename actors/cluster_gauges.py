"""The gauges of what the cluster holds now (augment_core/metric_catalog.py): running runs, how
long they have gone without progress, their budget share, the review queue, the event bus's
consumer lag and dead letters. Set by the alert watcher every interval, from the same reads its
rules judge, so a Prometheus alert and the panel's alert see the same numbers."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from augment_core.events import EventBus
from augment_core.reviews import count_states
from augment_core.store import MetadataStore, RunRecord
from pipelines import metrics

DEAD_LETTERS_COUNTED = 1000
PROGRESS_EVENTS = ("run.started", "step.progress")


class ClusterGauges:
    def __init__(self, store: MetadataStore, bus: EventBus) -> None:
        self.store = store
        self.bus = bus
        self._workflows: set[str] = set()  # set before: a workflow whose runs all ended goes back to 0
        self._groups: set[str] = set()
        self._progress: dict[str, tuple[int, dt.datetime]] = {}  # running run -> (events read, last progress)

    def last_progress(self, run_id: str) -> dt.datetime:
        """When the run last moved (run.started, step.progress), reading only its events not read before."""
        seq, last = self._progress[run_id]
        while events := self.bus.read(run_id, after=seq, limit=1000):
            for event in events:
                if event.type in PROGRESS_EVENTS:
                    last = max(last, dt.datetime.fromisoformat(event.at))
            seq = events[-1].seq
        self._progress[run_id] = (seq, last)
        return last

    def update(self, running: list[RunRecord], now: dt.datetime) -> None:
        count: dict[str, int] = defaultdict(int)
        quiet: dict[str, float] = defaultdict(float)
        budget: dict[str, float] = defaultdict(float)
        self._progress = {run.id: self._progress.get(run.id, (0, run.started_at or run.created_at))
                          for run in running}
        for run in running:
            count[run.workflow] += 1
            quiet[run.workflow] = max(quiet[run.workflow], (now - self.last_progress(run.id)).total_seconds())
            budget[run.workflow] = max(budget[run.workflow], budget_share(run))
        for workflow in self._workflows | set(count):
            metrics.set_gauge("augment_runs_running", count.get(workflow, 0), workflow=workflow)
            metrics.set_gauge("augment_run_progress_age_seconds", round(quiet.get(workflow, 0.0), 3), workflow=workflow)
            metrics.set_gauge("augment_run_budget_share", round(budget.get(workflow, 0.0), 4), workflow=workflow)
        self._workflows |= set(count)
        for state, n in count_states(self.store).items():
            metrics.set_gauge("augment_review_queue_items", n, state=state)
        lags = self.bus.group_lags()
        for group in self._groups | set(lags):
            metrics.set_gauge("augment_event_consumer_lag", lags.get(group, 0), group=group)
            dead = len(self.bus.dead_letters(group, limit=DEAD_LETTERS_COUNTED)) if group in lags else 0
            metrics.set_gauge("augment_event_dead_letters", dead, group=group)
        self._groups |= set(lags)


def budget_share(run: RunRecord) -> float:
    """The share of its budget a run has spent; 0 without a budget."""
    cost = run.cost or {}
    budget = float(cost.get("budget_usd") or 0.0)
    return float(cost.get("total_usd") or 0.0) / budget if budget else 0.0
