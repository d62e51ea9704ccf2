"""What a run wrote, judged: a run whose records failed at its steps fails when they are too many."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.engine.outputs import Outcomes, check_reconciled, failed_too_many
from pipelines.workflows.loader import parse_spec

SPEC: dict[str, Any] = {
    "name": "w", "source": {"kind": "csv", "path": "/in.csv"}, "schema": {"fields": {"id": {}}},
    "steps": [{"use": "text_stats", "params": {"column": "id"}}], "sink": {"dataset": "out"},
}


def spec_with(**top: Any) -> Any:
    return parse_spec({**SPEC, **top})


@pytest.mark.parametrize(("limit", "valid", "failed", "fails"), [
    (None, 10, 10, True),  # by default: only when every record failed
    (None, 10, 9, False),
    (None, 0, 0, False),  # nothing valid, nothing augmented: the quarantine tells
    (0.5, 10, 5, False),
    (0.5, 10, 6, True),
    (0.0, 10, 1, True),
    (1.0, 10, 10, False),
])
def test_a_run_fails_when_more_records_failed_than_its_workflow_allows(
        limit: float | None, valid: int, failed: int, fails: bool) -> None:
    spec = spec_with(max_failed_share=limit) if limit is not None else spec_with()
    reason = failed_too_many(spec, valid, Outcomes(failed, 0, {"a": (failed, 0), "b": (0, 0)}))
    assert (reason is not None) == fails
    if reason:
        assert reason.startswith(f"{failed} of {valid} records failed at a step")
        assert reason.endswith(f"records in error by step: a {failed}")


def test_max_failed_share_is_a_share() -> None:
    with pytest.raises(Exception, match="max_failed_share"):
        spec_with(max_failed_share=1.5)


def test_counts_that_do_not_reconcile_fail_the_run_saying_which() -> None:
    check_reconciled(10, 7, 3)
    with pytest.raises(RuntimeError, match=r"^counts do not reconcile: in=10, valid=7, quarantined=2$"):
        check_reconciled(10, 7, 2)
    with pytest.raises(RuntimeError, match="but the files hold 6 valid and 3"):
        check_reconciled(10, 7, 3, written=(6, 3))
