"""Each provider account's calls, cache hits and spend, from the runs' own cost records and the
specs they ran."""

from __future__ import annotations

import datetime as dt
from typing import Any

from augment_core.store import RunRecord
from pipelines.operations.provider_usage import spend_per_day, step_accounts, usage_by_account

SPEC: dict[str, Any] = {
    "providers": {"main": {"account": "openai-team"}, "backup": {}},
    "steps": [
        {"use": "normalize_url", "params": {"column": "website"}},
        {"use": "llm", "name": "tag", "params": {"provider": "main"}},
        {"use": "llm", "params": {"provider": "backup"}},
        {"use": "embed", "params": {"local_model": "wordllama-l2-supercat", "column": "x"}},
        {"use": "waterfall", "name": "find", "params": {"candidates": [
            {"use": "llm", "params": {"provider": "main"}}, {"use": "llm", "params": {"provider": "backup"}}]}},
    ],
}


def run(run_id: str, steps: dict[str, dict[str, Any]]) -> RunRecord:
    return RunRecord(id=run_id, workflow="w", workflow_version=1, spec_path="w.yaml", status="succeeded", steps=[],
                     counts={}, cost={"total_usd": 0, "steps": steps}, spec=SPEC,
                     created_at=dt.datetime(2026, 12, 4, tzinfo=dt.timezone.utc))


def test_a_step_counts_under_its_providers_account_and_a_waterfall_under_all_of_them() -> None:
    assert step_accounts(SPEC) == {"tag": "openai-team", "llm_2": "backup", "find": "openai-team + backup"}


def test_usage_adds_up_calls_cache_hits_and_spend_per_account_over_runs() -> None:
    usage = usage_by_account([
        run("r1", {"tag": {"calls": 10, "cache_hits": 30, "cost_usd": 0.25}, "llm_2": {"calls": 2, "cost_usd": 0.1}}),
        run("r2", {"tag": {"calls": 10, "cache_hits": 0, "cost_usd": 0.25}, "normalize_url_0": {"calls": 0}}),
        run("r3", {}),
    ])
    assert set(usage) == {"openai-team", "backup"}
    team = usage["openai-team"]
    assert (team.calls, team.cache_hits, round(team.cost_usd, 2), team.runs) == (20, 30, 0.5, {"r1", "r2"})
    assert team.hit_rate == 0.6 and usage["backup"].hit_rate == 0.0


def test_spend_is_summed_per_day_account_and_workflow_for_the_dashboard() -> None:
    later = run("r3", {"tag": {"cost_usd": 0.5}})
    later.created_at = dt.datetime(2026, 12, 5, 23, 59, tzinfo=dt.timezone.utc)
    assert spend_per_day([
        run("r1", {"tag": {"cost_usd": 0.25}, "llm_2": {"cost_usd": 0.1}, "find": {"cost_usd": 0.0}}),
        run("r2", {"tag": {"cost_usd": 0.25}}),
        later,
    ]) == [("2026-12-04", "backup", "w", 0.1), ("2026-12-04", "openai-team", "w", 0.5),
           ("2026-12-05", "openai-team", "w", 0.5)]
