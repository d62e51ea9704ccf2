"""The metrics of a run that ended (augment_core/metric_catalog.py), recorded once by its
coordinator from the stored outcome: the scraped counters add up to the runs' own counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipelines import metrics

RECORD_OUTCOMES = ("in", "valid", "quarantined", "augmented", "failed", "skipped")
NOT_AUGMENTERS = ("validate", "write")


def record_finished_run(workflow: str, status: str, counts: Mapping[str, int], steps: Sequence[Mapping[str, Any]],
                        duration_seconds: float | None) -> None:
    """Counts by outcome, each augmenting step's ok / error / skipped, the run by status and how
    long it took. A resumed run is counted again when it ends (its counts cover every record)."""
    metrics.count("augment_runs", 1, workflow=workflow, status=status)
    if duration_seconds is not None:
        metrics.observe("augment_run_duration_seconds", duration_seconds, workflow=workflow, status=status)
    for outcome in RECORD_OUTCOMES:
        metrics.count("augment_records", int(counts.get(outcome, 0) or 0), workflow=workflow, outcome=outcome)
    for step in steps:
        name = str(step.get("name"))
        if name in NOT_AUGMENTERS:
            continue
        rows, failed, skipped = (int(step.get(k) or 0) for k in ("rows", "failed", "skipped"))
        metrics.count("augment_step_records", max(0, rows - failed - skipped), workflow=workflow, step=name,
                      outcome="ok")
        metrics.count("augment_step_records", failed, workflow=workflow, step=name, outcome="error")
        metrics.count("augment_step_records", skipped, workflow=workflow, step=name, outcome="skipped")
