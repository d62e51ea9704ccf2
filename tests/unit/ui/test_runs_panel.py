"""The runs panel's views: failures are shown as messages, never as an empty table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import gradio as gr

from augment_core.events import Event
from augment_core.store import RunRecord, StepState
from ui.runs import (
    RunActions,
    RunFilter,
    Watches,
    act_view,
    ask_view,
    build_runs_panel,
    list_view,
    providers_view,
    run_filter,
    run_view,
    watch_view,
)

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def run(run_id: str = "20260102-030405-abcd1234", **fields: object) -> RunRecord:
    values = dict(
        id=run_id,
        workflow="organisations",
        workflow_version=1,
        spec_path="/x.yaml",
        status="failed",
        steps=[
            StepState(name="validate", state="succeeded", rows=9),
            StepState(name="write", state="failed", error="disk full"),
        ],
        counts={"in": 9, "valid": 7, "quarantined": 2, "augmented": 7},
        error="write failed: disk full",
        output={"dataset": "orgs", "version": 2, "path": "/data/orgs/v2", "quarantine_path": "/data/q"},
        created_at=NOW,
        started_at=NOW,
        finished_at=NOW + dt.timedelta(seconds=2.5),
    )
    return RunRecord(**(values | fields))


def failing(*_args: object) -> list[RunRecord]:
    raise ConnectionError("database is down")


def test_runs_are_listed_and_the_choice_is_kept() -> None:
    message, table, choices = list_view(lambda _filter: [run()], "20260102")
    assert "1 most recent run(s)" in message
    assert table.values.tolist() == [
        ["20260102-030405-abcd1234", "organisations", "failed", 9, 7, 2, 7, 0, 0, "2026-01-02 03:04:05", "2.5 s"]
    ]
    assert choices["choices"] == ["20260102-030405-abcd1234"] and choices["value"] == "20260102"


def test_an_empty_store_says_so() -> None:
    message, table, _ = list_view(lambda _filter: [], None)
    assert message.startswith("No runs yet") and table.empty


def test_a_failure_to_load_is_an_error_and_keeps_the_last_table() -> None:
    message, table, choices = list_view(failing, None)
    assert "Could not load runs" in message and "ConnectionError: database is down" in message
    assert table == gr.skip() and choices == gr.skip()


def test_one_run_shows_steps_error_and_outputs() -> None:
    summary, steps = run_view(lambda _id: run(), "20260102")
    assert "failed" in summary and "write failed: disk full" in summary and "/data/orgs/v2" in summary
    assert steps.values.tolist() == [["validate", "succeeded", 9, "", ""], ["write", "failed", 0, "", "disk full"]]


def test_a_failed_run_and_its_error_are_marked_as_errors_and_a_clean_one_is_not() -> None:
    summary, _ = run_view(lambda _id: run(), "20260102")
    assert summary.startswith("### ⚠️ Run") and "#### ⚠️ Error" in summary
    partial, _ = run_view(lambda _id: run(status="succeeded", error=None, counts={"in": 9, "failed": 1}), "2026")
    assert partial.startswith("### ⚠️ Run")  # records that failed stand out even when the run succeeded
    clean, _ = run_view(lambda _id: run(status="succeeded", error=None, counts={"in": 9}), "2026")
    assert "⚠️" not in clean


def test_the_panel_shows_no_server_paths() -> None:
    from serve_apps.gateway.redact import run_without_paths

    shown = run_without_paths(run(error="cannot write /srv/augment/data/orgs/v2/part-0.parquet"), "/data")
    summary, _ = run_view(lambda _id: shown, "2026")
    assert "orgs/v2" in summary and "/data/orgs" not in summary and "/srv/" not in summary
    assert "part-0.parquet" in summary


def test_an_unknown_or_unreadable_run_is_explained() -> None:
    def unknown(run_id: str) -> RunRecord:
        raise KeyError(f"no run {run_id!r}")

    summary, steps = run_view(unknown, "nope")
    assert "no run 'nope'" in summary and steps.empty
    summary, _ = run_view(lambda _id: failing()[0], "x")
    assert "Could not load run x" in summary


def test_the_panel_builds_without_serve() -> None:
    assert isinstance(build_runs_panel(lambda _f: [], lambda _id: run(), lambda _id: iter([]), refresh_seconds=2),
                      gr.Blocks)


def test_each_step_shows_its_work_time_once_measured() -> None:
    record = run(steps=[StepState(name="validate", state="succeeded", rows=9, seconds=1.25),
                        StepState(name="normalize_url_1", state="succeeded", rows=9, seconds=0.0412),
                        StepState(name="write", state="running")])
    table = run_view(lambda run_id: record, record.id)[1]
    assert table["work"].tolist() == ["1.2 s", "41 ms", ""]


def test_records_that_failed_or_were_skipped_stand_out_in_the_list() -> None:
    records = [run(status="succeeded", counts={"in": 9, "failed": 3, "skipped": 1}), run(status="succeeded")]
    message, table, _ = list_view(lambda _filter: records, None)
    assert table["status"].tolist() == ["succeeded · 3 failed · 1 skipped", "succeeded"]
    assert "⚠️ 1 with failures" in message


def test_the_filters_reach_the_read_and_an_empty_answer_says_so() -> None:
    asked: list[RunFilter] = []
    message, table, _ = list_view(lambda wanted: asked.append(wanted) or [], None, " orgs ", "failed", "last 7 days")
    assert asked[0].workflow == "orgs" and asked[0].status == "failed"
    assert asked[0].since is not None and (dt.datetime.now(dt.timezone.utc) - asked[0].since).days == 7
    assert message == "No runs match these filters." and table.empty
    assert run_filter("", "any", "any time") == RunFilter()


class FakeRequest:
    def __init__(self, session: str) -> None:
        self.session_hash = session


def event(seq: int, type: str, **data: object) -> Event:
    return Event(seq=seq, run_id="r", type=type, at="2026-01-02T03:04:05Z", data=data)


def test_a_live_run_follows_its_events_until_it_ends() -> None:
    """Each batch of events redraws the run: steps from step.progress (fresher than the stored
    row), the failed records with why, rate and ETA, the cost against the budget."""
    live_steps = [StepState(name="validate", state="succeeded", rows=100), StepState(name="tag", state="running"),
                  StepState(name="write", state="pending")]
    stored = [run(status="running", error=None, finished_at=None, steps=live_steps,
                  counts={"in": 100, "valid": 100}, cost={"total_usd": 0.25, "budget_usd": 1.0})]
    batches = [
        [event(1, "run.started")],
        [event(2, "step.progress", steps={"validate": {"state": "succeeded", "rows": 100},
                                          "tag": {"state": "running", "rows": 20},
                                          "write": {"state": "pending", "rows": 0}}),
         event(3, "record.failed", record_uuid="u-1", step="tag", reason="provider said 500")],
        [event(4, "step.progress", steps={"validate": {"state": "succeeded", "rows": 100},
                                          "tag": {"state": "running", "rows": 60},
                                          "write": {"state": "pending", "rows": 0}})],
    ]

    def follow(_run_id: str) -> Iterator[list[Event]]:
        for batch in batches:
            yield batch

    views = list(watch_view(lambda _id: stored[0], follow, Watches(), "2026", FakeRequest("s1")))
    assert len(views) == 4  # the run at once, then one per batch
    summary, steps, failures = views[-1]
    assert steps.values.tolist()[1][:3] == ["tag", "running", 60]
    assert failures.values.tolist() == [["u-1", "tag", "provider said 500"]]
    assert "60 of 100 rows augmented" in summary and "rows/s" in summary and "ETA" in summary
    assert "cost $0.2500 of $1.00 budget (25%)" in summary


def test_choosing_another_run_stops_following_the_first() -> None:
    watches = Watches()
    seen: list[int] = []

    def follow(_run_id: str) -> Iterator[list[Event]]:
        for seq in range(1, 100):
            seen.append(seq)
            yield [event(seq, "run.started")]

    first = watch_view(lambda _id: run(status="running"), follow, watches, "2026", FakeRequest("s1"))
    next(first), next(first)
    watches.begin("s1")  # the same page chose another run
    assert list(first) == [] and seen == [1, 2]


def test_when_the_bus_fails_the_last_view_stays_with_an_error() -> None:
    def follow(_run_id: str) -> Iterator[list[Event]]:
        yield [event(1, "record.failed", record_uuid="u-1", step="tag", reason="x")]
        raise ConnectionError("redis is down")

    views = list(watch_view(lambda _id: run(status="running"), follow, Watches(), "2026", FakeRequest("s1")))
    summary, _, failures = views[-1]
    assert "Live updates stopped" in summary and "ConnectionError: redis is down" in summary
    assert failures.values.tolist() == [["u-1", "tag", "x"]]


class SignedIn:
    def __init__(self, user: str) -> None:
        self.username = user


def actions(roles: dict[str, bool], refuse: str | None = None) -> RunActions:
    done: list[tuple[str, str]] = []

    def act(status: str) -> Callable[[str, str], RunRecord]:
        def apply(run_id: str, user: str) -> RunRecord:
            if refuse:
                raise RuntimeError(refuse)
            done.append((run_id, user))
            return run(run_id=run_id, status=status)
        return apply

    return RunActions(cancel=act("cancelled"), resume=act("running"), may_act=lambda user: roles[user])


def test_an_action_asks_first_and_says_what_it_did() -> None:
    both = actions({"olga": True})
    row, question, pending = ask_view(both, "cancel", "r-1", SignedIn("olga"))
    assert row["visible"] and question.startswith("**Cancel run `r-1`?**") and pending == ("cancel", "r-1")
    row, outcome = act_view(both, pending, SignedIn("olga"))
    assert not row["visible"] and outcome == "✓ Run `r-1` cancelled: now **cancelled**."
    _, _, pending = ask_view(both, "resume", "r-1", SignedIn("olga"))
    assert act_view(both, pending, SignedIn("olga"))[1] == "✓ Run `r-1` resumed: now **running**."


def test_a_viewer_is_refused_before_and_at_the_action_and_refusals_say_why() -> None:
    roles = {"vera": False, "olga": True}
    _, question, pending = ask_view(actions(roles), "cancel", "r-1", SignedIn("vera"))
    assert question == "⚠️ Cancel needs the operator role; vera may only look." and pending is None
    # a forged pending action from a viewer's page is refused when it is done, too
    assert act_view(actions(roles), ("cancel", "r-1"), SignedIn("vera"))[1].startswith("⚠️ Cancel needs")
    assert ask_view(actions(roles), "resume", "  ", SignedIn("olga"))[1] == "⚠️ Choose a run first."
    refused = act_view(actions(roles, refuse="run r-1 already ended: succeeded"), ("cancel", "r-1"), SignedIn("olga"))
    assert refused[1] == "⚠️ **Cancel refused**: run r-1 already ended: succeeded"


def test_events_shown_in_the_panel_carry_no_server_paths() -> None:
    from serve_apps.gateway.redact import event_without_paths

    failed = event(1, "record.failed", record_uuid="u-1", step="tag",
                   reason="cannot read /srv/augment/refs/countries.csv: gone",
                   output={"path": "/data/datasets/orgs/v2", "quarantine_path": "/elsewhere/q"})
    shown = event_without_paths(failed, "/data")
    assert shown.data["reason"] == "cannot read countries.csv: gone"
    assert shown.data["output"] == {"path": "datasets/orgs/v2", "quarantine_path": "q"}
    assert shown.data["record_uuid"] == "u-1" and failed.data["reason"].startswith("cannot read /srv")


def test_provider_health_shows_pace_waits_and_trouble_of_the_last_minutes() -> None:
    from augment_core.ratelimit import Limits, Outcome, RateLimiter

    now = [0.0]
    limiter = RateLimiter(Limits(), clock=lambda: now[0])
    for status in (200, 200, 429, 500):  # the replies of four calls (their permits long gone)
        limiter.release(0, Outcome(status=status))
        now[0] += 0.2
    calm = {"account": "quiet", "limits": {"requests_per_minute": None, "pace": 0.98}, "pace_factor": 1.0,
            "in_flight": 0, "queued": 0, "circuit": "closed", "paused_for": 0.0, "recent": {}}
    busy = {"account": "openai-main", "limits": {**vars(limiter.limits), "requests_per_minute": 600},
            **limiter.snapshot()}
    busy["today"] = {"calls": 30, "cache_hits": 10, "hit_rate": 0.25, "cost_usd": 0.0123, "runs": ["r1", "r2"]}
    joined = {"account": "a + b", "today": {"calls": 4, "cache_hits": 0, "hit_rate": 0.0, "cost_usd": 0.5,
                                            "runs": ["r3"]}}  # a waterfall's, no limiter of its own
    message, table = providers_view(lambda: [busy, calm, {"account": "gone", "error": "RayActorError"}, joined])
    rows = {row[0]: row for row in table.values.tolist()}
    assert rows["openai-main"][1] == "600 req/min" and rows["openai-main"][2] == "78% of the limit"  # slowed by the 429
    assert rows["openai-main"][6:] == [2, 1, 1, "25% (10 of 40)", "$0.01 (2 run(s))"]
    assert rows["quiet"][9:] == ["", "$0.00"]
    assert rows["a + b"][5:] == ["no limiter now", "", "", "", "0% (0 of 4)", "$0.50 (1 run(s))"]
    assert rows["quiet"][1:3] == ["no request limit", "98% of the limit"] and rows["quiet"][5] == "closed"
    assert rows["gone"][5] == "⚠ not answering (RayActorError)"
    assert message == "4 provider account(s) · ⚠ trouble: gone, openai-main"
    assert list(rows) == ["gone", "openai-main", "quiet", "a + b"]  # trouble, then limiters now, then the rest
    now[0] += 301  # five minutes later the window is empty again
    assert limiter.recent() == {"answered": 0, "rate_limited": 0, "failures": 0}
    assert providers_view(lambda: [])[0] == "No provider account has been used on this cluster yet."
    assert providers_view(lambda: (_ for _ in ()).throw(ConnectionError("no cluster")))[1] == gr.skip()


def test_the_quarantined_records_of_a_run_show_with_why_and_a_failure_keeps_the_table() -> None:
    from ui.runs import MAX_QUARANTINE_SHOWN, quarantine_view

    rows = [{"source_row": 4, "field": "email", "reason": "email: not an address", "record": '{"email": "x@"}'}]
    shown = quarantine_view(lambda run_id, limit: rows, "r1")
    assert shown["label"] == "Quarantined records: 1, with why"
    assert shown["value"].values.tolist() == [[4, "email", "email: not an address", '{"email": "x@"}']]
    many = quarantine_view(lambda run_id, limit: rows * limit, "r1")
    assert many["label"] == f"Quarantined records: the first {MAX_QUARANTINE_SHOWN}, with why"
    assert quarantine_view(lambda run_id, limit: [], "r1")["label"] == "Quarantined records: none"
    broken = quarantine_view(lambda run_id, limit: (_ for _ in ()).throw(OSError("bucket gone")), "r1")
    assert broken == {"__type__": "update", "label": "⚠ Quarantined records could not be read: OSError: bucket gone"}


def test_the_output_dataset_opens_with_its_first_rows_and_says_why_when_it_cannot() -> None:
    from ui.runs import MAX_CELL_CHARS, MAX_OUTPUT_SHOWN, output_view

    rows = [{"org_id": "ORG-00001", "employees": 12, "notes": "x" * 400, "tags": ["a", "b"],
             "region_provenance": '{"step": "region"}', "region": None}]
    asked: list[tuple[str, int]] = []
    shown = output_view(lambda run_id, limit: asked.append((run_id, limit)) or rows, lambda _id: run(), "r1")
    assert asked == [("r1", MAX_OUTPUT_SHOWN)]
    assert shown["visible"] is True
    assert shown["label"] == "Output orgs v2: all 1 row(s) (provenance columns left out)"
    assert list(shown["value"].columns) == ["org_id", "employees", "notes", "tags", "region"]
    [[org, employees, notes, tags, region]] = shown["value"].values.tolist()
    assert (org, employees, tags, region) == ("ORG-00001", 12, "['a', 'b']", None)
    assert notes == "x" * MAX_CELL_CHARS + "…"
    many = output_view(lambda run_id, limit: rows * limit, lambda _id: run(), "r1")
    assert many["label"].startswith(f"Output orgs v2: the first {MAX_OUTPUT_SHOWN} rows")
    assert output_view(lambda run_id, limit: [], lambda _id: run(), "r1")["label"] == "Output orgs v2: no rows"

    going = run(status="running", output={}, spec={"sink": {"dataset": "orgs_out"}})
    assert output_view(lambda run_id, limit: rows, lambda _id: going, "r1")["label"] == (
        "Output orgs_out, no version yet (the run is running): written so far: all 1 row(s)"
        " (provenance columns left out)")

    def unknown(run_id: str) -> RunRecord:
        raise KeyError(f"no run {run_id!r}")

    assert output_view(lambda run_id, limit: rows, unknown, "r9")["label"] == "⚠ no run 'r9'"
    broken = output_view(lambda run_id, limit: (_ for _ in ()).throw(OSError("bucket gone")), lambda _id: run(), "r1")
    assert broken["label"] == "⚠ The output could not be read: OSError: bucket gone"
    assert output_view(lambda run_id, limit: rows, lambda _id: run(), None)["label"] == "Choose a run first."
