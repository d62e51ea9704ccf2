"""The runs panel: recent runs with filters, and one run followed live from its events — steps,
rows, rate, ETA, cost against its budget and the records that failed, with their reasons.

Built from read functions so it knows nothing of Serve, Ray or the store. A failure to load is
shown as an error next to the last data that did load, never as an empty table. A run whose
records failed says so in its status, never a bare `succeeded`.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import pandas as pd

from augment_core.events import Event
from augment_core.store import LIVE_STATUSES, RUN_ID, RunRecord, StepState
from ui.alerts import AlertAccess, build_alerts_tab

STATUSES = ["pending", "running", "succeeded", "failed", "cancelled"]
SINCE = {"any time": None, "last 24 hours": 1, "last 7 days": 7, "last 30 days": 30}
FAILURE_COLUMNS = ["record_uuid", "step", "reason"]
START_WAIT_SECONDS = 60.0  # how long a chosen run that does not exist yet is waited for
MAX_FAILURES_SHOWN = 500  # the run's failures beyond these are counted, not listed
ANY = "any"


@dataclass(frozen=True)
class RunFilter:
    workflow: str | None = None
    status: str | None = None
    since: dt.datetime | None = None


@dataclass(frozen=True)
class RunActions:
    """What the panel's buttons do, as the signed-in user (by name). `cancel` and `resume` raise
    an exception whose message says why they refused; `may_act` says whether the user's role may."""

    cancel: Callable[[str, str], RunRecord]  # (run id, user) -> the run as it is now
    resume: Callable[[str, str], RunRecord]
    may_act: Callable[[str], bool]


ACTIONS = {
    "cancel": ("Cancel", "cancelled", "It stops and ends `cancelled`, keeping what it wrote."),
    "resume": ("Resume", "resumed", "It carries on with the same run id and output folder; records already "
                                    "written are not done again."),
}
ListRuns = Callable[[RunFilter], list[RunRecord]]
# Each account's limiter snapshot (RateLimiter.snapshot), with "today": what runs created today
# (UTC) did with it (calls, cache_hits, hit_rate, cost_usd, runs); an account used today whose
# limiter is not on the cluster now comes with "today" alone.
ReadProviders = Callable[[], list[dict[str, Any]]]
PROVIDER_COLUMNS = ["account", "limit", "pace now", "in flight", "queued", "circuit",
                    "answered (5 min)", "429s (5 min)", "errors (5 min)", "cache hits today", "spend today"]
GetRun = Callable[[str], RunRecord]
# (run id, at most) -> the run's first quarantined rows (pipelines/io/sinks.QUARANTINE_SCHEMA)
ReadQuarantine = Callable[[str, int], list[dict[str, Any]]]
QUARANTINE_COLUMNS = ["source row", "field", "reason", "record as read"]
MAX_QUARANTINE_SHOWN = 50
# (run id, at most) -> the first rows of the run's output (so far, for a run that is going)
ReadOutput = Callable[[str, int], list[dict[str, Any]]]
MAX_OUTPUT_SHOWN = 50
MAX_CELL_CHARS = 300
FollowRun = Callable[[str], Iterator[list[Event]]]  # a run's events, batch by batch, until it ends

RUN_COLUMNS = ["run id", "workflow", "status", "in", "valid", "quarantined", "augmented", "failed", "skipped",
               "created (UTC)", "duration"]
STEP_COLUMNS = ["step", "state", "rows", "work", "error"]  # work: the step's time summed over workers
NO_RUN_CHOSEN = "Choose a run in the table or the list to see its steps."


def _duration(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.1f} s"


def _when(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _code(text: str) -> str:
    """Text shown verbatim in Markdown (errors and paths may hold *, _ or backticks)."""
    return "```text\n" + text.replace("```", "'''") + "\n```"


def status_label(record: RunRecord) -> str:
    """'succeeded · 3 failed · 1 skipped': records that did not get through stand out."""
    parts = [f"{record.counts[what]} {what}" for what in ("failed", "skipped") if record.counts.get(what)]
    return " · ".join([record.status, *parts])


def runs_table(records: list[RunRecord]) -> pd.DataFrame:
    rows = [
        [r.id, r.workflow, status_label(r), r.counts.get("in", 0), r.counts.get("valid", 0),
         r.counts.get("quarantined", 0), r.counts.get("augmented", 0), r.counts.get("failed", 0),
         r.counts.get("skipped", 0), _when(r.created_at),
         _duration(r.duration_seconds)]
        for r in records
    ]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _state(step: StepState) -> str:
    """'succeeded with 3 failed' for a step some records did not get through."""
    parts = [f"{n} {what}" for n, what in ((step.failed, "failed"), (step.skipped, "skipped")) if n]
    return f"{step.state} with {' and '.join(parts)}" if parts else step.state


def steps_table(record: RunRecord | None) -> pd.DataFrame:
    rows = [] if record is None else [
        [s.name, _state(s), s.rows, s.work, s.error or ""] for s in record.steps]
    return pd.DataFrame(rows, columns=STEP_COLUMNS)


def run_summary(record: RunRecord) -> str:
    c = record.counts
    alarm = "⚠️ " if record.status == "failed" or c.get("failed") else ""  # failures stand out, never read as done
    live = record.status in LIVE_STATUSES
    took = "running for" if live else "took"
    if live and not any(c.values()):
        records = "Records: counted when the run ends (see the steps below)"
    else:
        records = (f"Records: in {c.get('in', 0)} · valid {c.get('valid', 0)} · quarantined {c.get('quarantined', 0)}"
                   f" · augmented {c.get('augmented', 0)} · failed {c.get('failed', 0)}"
                   f" · skipped {c.get('skipped', 0)}")
    lines = [
        f"### {alarm}Run `{record.id}` — **{record.status}**",
        f"Workflow **{record.workflow}** v{record.workflow_version} · created {_when(record.created_at)} UTC"
        + (f" · {took} {_duration(record.duration_seconds)}" if record.duration_seconds is not None else ""),
        records,
    ]
    out = record.output
    if out:
        if out.get("partial"):
            paths = [f"output: {out.get('rows_written')} record(s) written, not catalogued, at {out.get('path')}"]
        else:
            paths = [f"output: {out.get('dataset')} v{out.get('version')} at {out.get('path')}"]
        paths += [
            f"{label}: {out[key]}"
            for key, label in (("quarantine_path", "quarantine"), ("csv_path", "csv export"))
            if out.get(key)
        ]
        lines.append("**Output**\n\n" + _code("\n".join(paths)))
    if record.error:
        lines.append("#### ⚠️ Error\n\n" + _code(record.error))
    return "\n\n".join(lines)


def run_filter(workflow: str | None, status: str | None, since: str | None,
               now: dt.datetime | None = None) -> RunFilter:
    """The filter the panel's three inputs describe ('any' or empty: no filter on that)."""
    days = SINCE.get(since or "any time")
    start = (now or dt.datetime.now(dt.timezone.utc)) - dt.timedelta(days=days) if days else None
    return RunFilter(workflow=(workflow or "").strip() or None,
                     status=status if status in STATUSES else None, since=start)


def list_view(list_runs: ListRuns, chosen: str | None, workflow: str | None = None, status: str | None = None,
              since: str | None = None) -> tuple[str, Any, Any]:
    """(status message, runs table, run choices); on failure the table and choices are left as they were."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%H:%M:%S")
    wanted = run_filter(workflow, status, since)
    try:
        records = list_runs(wanted)
    except Exception as exc:  # shown to the user next to the last runs that loaded
        return f"⚠️ **Could not load runs** ({now} UTC): {type(exc).__name__}: {exc}", gr.skip(), gr.skip()
    filtered = wanted != RunFilter()
    if records:
        matching = " matching the filters" if filtered else ""
        message = f"{len(records)} most recent run(s){matching} · refreshed {now} UTC"
        if problems := sum(1 for r in records if r.status == "failed" or r.counts.get("failed")):
            message += f" · ⚠️ {problems} with failures"
    elif filtered:
        message = "No runs match these filters."
    else:
        message = "No runs yet. Start one with `augment run <workflow.yaml>`."
    # With no run chosen the value is left alone: a refresh that left before a deep link's first
    # view arrived must not clear the run that view chose.
    choices = [r.id for r in records]
    return message, runs_table(records), (gr.update(choices=choices, value=chosen) if chosen
                                          else gr.update(choices=choices))


def run_view(get_run: GetRun, run_id: str | None) -> tuple[str, pd.DataFrame]:
    """(summary, steps table) of one run, or a visible reason why it cannot be shown."""
    if not run_id or not run_id.strip():
        return NO_RUN_CHOSEN, steps_table(None)
    try:
        record = get_run(run_id.strip())
    except KeyError as exc:
        return f"⚠️ **{exc.args[0] if exc.args else exc}**", steps_table(None)
    except Exception as exc:  # shown to the user instead of a blank detail
        return f"⚠️ **Could not load run {run_id}**: {type(exc).__name__}: {exc}", steps_table(None)
    return run_summary(record), steps_table(record)


def failures_table(failures: list[list[str]]) -> pd.DataFrame:
    return pd.DataFrame(failures, columns=FAILURE_COLUMNS)


def quarantine_view(read: ReadQuarantine | None, run_id: str | None) -> Any:
    """The first quarantined records of the run with why, as the table's new value and label; a
    failure to read keeps the table and says why in its label."""
    if read is None or not run_id:
        return gr.update(value=pd.DataFrame(columns=QUARANTINE_COLUMNS), label="Quarantined records, with why")
    try:
        rows = read(run_id, MAX_QUARANTINE_SHOWN)
    except Exception as exc:
        return gr.update(label=f"⚠ Quarantined records could not be read: {type(exc).__name__}: {exc}")
    shown = [[r.get("source_row"), r.get("field") or "", r.get("reason") or "",
              str(r.get("record") or "")[:MAX_CELL_CHARS]] for r in rows]
    label = (f"Quarantined records: the first {len(shown)}, with why" if len(shown) == MAX_QUARANTINE_SHOWN
             else f"Quarantined records: {len(shown)}, with why" if shown else "Quarantined records: none")
    return gr.update(value=pd.DataFrame(shown, columns=QUARANTINE_COLUMNS), label=label)


def output_cell(value: Any) -> Any:
    """A dataset value as a table shows it: numbers and text as they are (long text cut), the rest as text."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = str(value)
    return text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS] + "…"


def output_view(read: ReadOutput, get_run: GetRun, run_id: str | None) -> Any:
    """The first rows of the run's output dataset (without the *_provenance columns), shown; why
    they cannot be, in the table's label."""
    if not run_id:
        return gr.update(visible=True, value=pd.DataFrame(), label="Choose a run first.")
    try:
        run = get_run(run_id)
        rows = read(run_id, MAX_OUTPUT_SHOWN)
    except KeyError as exc:
        return gr.update(visible=True, value=pd.DataFrame(), label=f"⚠ {exc.args[0] if exc.args else exc}")
    except Exception as exc:
        return gr.update(visible=True, value=pd.DataFrame(),
                         label=f"⚠ The output could not be read: {type(exc).__name__}: {exc}")
    version = run.output.get("version")
    # Only a run that succeeds catalogues a version; until then (or after a failure or a cancel,
    # which a resume carries on) its folder holds what it wrote so far.
    name = (f"Output {run.dataset} v{version}" if version is not None
            else f"Output {run.dataset}, no version yet (the run is {run.status}): written so far")
    if not rows:
        return gr.update(visible=True, value=pd.DataFrame(), label=f"{name}: no rows")
    columns = [c for c in rows[0] if not c.endswith("_provenance")]
    table = pd.DataFrame([[output_cell(r.get(c)) for c in columns] for r in rows], columns=columns)
    shown = f"the first {len(rows)} rows" if len(rows) == MAX_OUTPUT_SHOWN else f"all {len(rows)} row(s)"
    return gr.update(visible=True, value=table, label=f"{name}: {shown} (provenance columns left out)")


@dataclass
class LiveRun:
    """What a run's events told so far: its steps (fresher than the row's heartbeat), the records
    that failed with why, and the rows through the last step over time (for rate and ETA)."""

    steps: dict[str, tuple[str, int]] = field(default_factory=dict)
    failures: list[list[str]] = field(default_factory=list)
    failed_events: int = 0
    progress: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, rows done)

    def apply(self, events: list[Event], now: float) -> None:
        for event in events:
            if event.type == "step.progress":
                steps = event.data.get("steps") or {}
                self.steps = {n: (str(s.get("state", "")), int(s.get("rows") or 0)) for n, s in steps.items()}
                if (done := self.rows_done()) is not None:
                    self.progress = [*self.progress[-30:], (now, done)]
            elif event.type == "record.failed":
                self.failed_events += 1
                if len(self.failures) < MAX_FAILURES_SHOWN:
                    self.failures.append([str(event.data.get(k, "")) for k in ("record_uuid", "step", "reason")])

    def rows_done(self) -> int | None:
        """Valid rows through every augmenter: the slowest one's (steps run validate, augmenters, write)."""
        augmenters = list(self.steps.values())[1:-1]
        return min(rows for _, rows in augmenters) if augmenters else None

    def rows_validated(self) -> int:
        return next(iter(self.steps.values()))[1] if self.steps else 0

    def merged(self, record: RunRecord) -> RunRecord:
        """The stored run with the steps its events reported since its last heartbeat."""
        if not self.steps or record.status not in LIVE_STATUSES:
            return record
        steps = [s.model_copy(update={"state": self.steps[s.name][0], "rows": max(s.rows, self.steps[s.name][1])})
                 if s.name in self.steps else s for s in record.steps]
        return record.model_copy(update={"steps": steps})

    def rate(self) -> float | None:
        """Rows per second through the last step over the last samples."""
        if len(self.progress) < 2:
            return None
        (t0, r0), (t1, r1) = self.progress[0], self.progress[-1]
        return (r1 - r0) / (t1 - t0) if t1 > t0 and r1 > r0 else None


def progress_line(record: RunRecord, live: LiveRun) -> str:
    """Rows done, rate and ETA while a run is live; its cost against its budget whenever it has one."""
    parts = []
    if record.status in LIVE_STATUSES and live.progress:
        # Valid rows are counted when the run ends; until then, the rows validated (quarantine included).
        done, total = live.progress[-1][1], record.counts.get("valid") or live.rows_validated()
        parts.append(f"{done:,} of {total:,} rows augmented" if total else f"{done:,} rows augmented")
        if (rate := live.rate()) is not None:
            parts.append(f"{rate:,.1f} rows/s" if rate < 10 else f"{rate:,.0f} rows/s")
            if total > done:
                parts.append(f"ETA {_duration((total - done) / rate)}")
    cost = record.cost or {}
    if cost.get("total_usd") or cost.get("budget_usd"):
        budget = cost.get("budget_usd")
        spent = float(cost.get("total_usd") or 0)
        share = f" ({spent / budget:.0%})" if budget else ""
        parts.append(f"cost ${spent:.4f}" + (f" of ${budget:.2f} budget{share}" if budget else ""))
        if cost.get("budget_exhausted"):
            parts.append("⚠️ budget exhausted")
    return "**Progress:** " + " · ".join(parts) if parts else ""


def live_view(record: RunRecord, live: LiveRun, note: str = "") -> tuple[str, pd.DataFrame, pd.DataFrame]:
    shown = live.merged(record)
    text = run_summary(shown)
    if line := progress_line(shown, live):
        text += "\n\n" + line
    if live.failed_events > len(live.failures):
        text += f"\n\nShowing the first {len(live.failures)} of {live.failed_events} failed records."
    if note:
        text += "\n\n" + note
    return text, steps_table(shown), failures_table(live.failures)


class Watches:
    """The run each browser session follows: choosing another ends the previous follower at its
    next batch of events, as does closing the page."""

    def __init__(self) -> None:
        self._current: dict[str, int] = {}
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()

    def begin(self, session: str) -> int:
        with self._lock:
            token = self._current[session] = next(self._tokens)
            return token

    def current(self, session: str, token: int) -> bool:
        with self._lock:
            return self._current.get(session) == token

    def end(self, session: str, token: int | None = None) -> None:
        with self._lock:
            if token is None or self._current.get(session) == token:
                self._current.pop(session, None)


def watch_view(get_run: GetRun, follow: FollowRun, watches: Watches, run_id: str | None,
               request: gr.Request) -> Iterator[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """One run, then again at each batch of its events (pushed by the bus, not polled) until it
    ends, another run is chosen or the page is closed."""
    session = request.session_hash or ""
    token = watches.begin(session)
    summary, steps = run_view(get_run, run_id)
    if run_id and RUN_ID.fullmatch(run_id.strip()) and summary.startswith("⚠️ **no run"):
        # A run just launched (the workflow editor links to it at once) appears when its job starts.
        deadline = time.monotonic() + START_WAIT_SECONDS
        while summary.startswith("⚠️ **no run") and time.monotonic() < deadline:
            yield f"Waiting for run `{run_id.strip()}` to start…", steps, failures_table([])
            time.sleep(1.0)
            if not watches.current(session, token):
                return
            summary, steps = run_view(get_run, run_id)
        if summary.startswith("⚠️ **no run"):
            summary += (f"\n\nIf it was just launched, its job did not start it: "
                        f"`ray job logs augment-{run_id.strip()}` says why.")
    if not run_id or not run_id.strip() or summary.startswith("⚠️"):
        watches.end(session, token)
        yield summary, steps, failures_table([])
        return
    live = LiveRun()
    record = get_run(run_id.strip())
    try:
        yield live_view(record, live)
        for events in follow(record.id):
            if not watches.current(session, token):
                return
            if not events:
                continue
            live.apply(events, time.monotonic())
            try:
                record = get_run(record.id)
            except Exception as exc:  # the bus answered, the store did not: the events still count
                yield live_view(record, live, f"⚠️ Could not re-read the run: {type(exc).__name__}: {exc}")
                continue
            yield live_view(record, live)
    except Exception as exc:  # the bus is down: say so beside what was shown
        yield live_view(record, live, f"⚠️ **Live updates stopped**: {type(exc).__name__}: {exc}")
    finally:
        watches.end(session, token)


def ask_view(actions: RunActions, action: str, run_id: str | None,
             request: gr.Request) -> tuple[Any, str, tuple[str, str] | None]:
    """(the confirmation row, its question, the action waiting for a yes) — or, for a user whose
    role may not act or no run chosen, the reason in place of the question."""
    verb, _, consequence = ACTIONS[action]
    user = request.username or ""
    if not run_id or not run_id.strip():
        return gr.update(visible=True), "⚠️ Choose a run first.", None
    try:
        allowed = actions.may_act(user)
    except Exception as exc:  # the store did not answer: no action without knowing the role
        return gr.update(visible=True), f"⚠️ Cannot check your role right now: {type(exc).__name__}", None
    if not allowed:
        return gr.update(visible=True), f"⚠️ {verb} needs the operator role; {user} may only look.", None
    question = f"**{verb} run `{run_id.strip()}`?** {consequence}"
    return gr.update(visible=True), question, (action, run_id.strip())


def act_view(actions: RunActions, pending: tuple[str, str] | None, request: gr.Request) -> tuple[Any, str]:
    """Do the confirmed action: (the confirmation row, hidden, and the outcome) — refused ones
    with why. The role is checked again: it may have changed since the question."""
    if not pending:
        return gr.update(visible=False), ""
    action, run_id = pending
    verb, done, _ = ACTIONS[action]
    user = request.username or ""
    try:
        if not actions.may_act(user):
            return gr.update(visible=False), f"⚠️ {verb} needs the operator role; {user} may only look."
        record = (actions.cancel if action == "cancel" else actions.resume)(run_id, user)
    except Exception as exc:  # refused (ended, unknown, no cluster) or failed: the user reads why
        return gr.update(visible=False), f"⚠️ **{verb} refused**: {exc}"
    return gr.update(visible=False), f"✓ Run `{record.id}` {done}: now **{record.status}**."


def today_cells(today: dict[str, Any] | None) -> list[str]:
    """The cache's share of the answers, and the spend, of runs created today."""
    if not today:
        return ["", "$0.00"]
    rate = today.get("hit_rate")
    hits = "no lookups" if rate is None else f"{rate:.0%} ({today.get('cache_hits', 0):,} of " \
        f"{today.get('cache_hits', 0) + today.get('calls', 0):,})"
    return [hits, f"${float(today.get('cost_usd') or 0):.2f} ({len(today.get('runs') or [])} run(s))"]


def provider_row(snapshot: dict[str, Any]) -> list[Any]:
    """One account: its limit, the pace it keeps now (429s slow it), what waits and what failed,
    and what today's runs took from the cache and spent."""
    today = today_cells(snapshot.get("today"))
    if "error" in snapshot:
        return [snapshot.get("account", "?"), "", "", "", "", f"⚠ not answering ({snapshot['error']})", "", "", "",
                *today]
    if "circuit" not in snapshot:  # used today, no limiter on the cluster now (restarted, or a waterfall's several)
        return [snapshot.get("account", "?"), "", "", "", "", "no limiter now", "", "", "", *today]
    limits, recent = snapshot.get("limits") or {}, snapshot.get("recent") or {}
    rpm = limits.get("requests_per_minute")
    pace = float(snapshot.get("pace_factor") or 1.0) * float(limits.get("pace") or 1.0)
    limit = f"{rpm:g} req/min" if rpm else "no request limit"
    circuit = str(snapshot.get("circuit", ""))
    if circuit != "closed":
        circuit = f"⚠ {circuit}"
    if float(snapshot.get("paused_for") or 0) > 0:
        circuit += f" · paused {float(snapshot['paused_for']):.1f} s"
    return [snapshot.get("account", ""), limit, f"{pace:.0%} of the limit", snapshot.get("in_flight", 0),
            snapshot.get("queued", 0), circuit, recent.get("answered", 0), recent.get("rate_limited", 0),
            recent.get("failures", 0), *today]


def in_trouble(row: list[Any]) -> bool:
    """A provider row whose circuit is not closed (or whose limiter does not answer), or that had
    429s or errors in the last minutes."""
    return str(row[5]).startswith("⚠") or bool(row[7]) or bool(row[8])


def providers_view(read: ReadProviders) -> tuple[str, Any]:
    """(message, table); on failure the table is left as it was."""
    try:
        snapshots = read()
    except Exception as exc:
        return f"⚠️ **Could not read the provider limiters**: {type(exc).__name__}: {exc}", gr.skip()
    if not snapshots:
        return "No provider account has been used on this cluster yet.", pd.DataFrame(columns=PROVIDER_COLUMNS)
    # Trouble first, then the accounts with a limiter now, each by name: with many accounts the
    # table scrolls (and its search box finds one), so what needs a look must not hide at the bottom.
    rows = sorted((provider_row(s) for s in snapshots),
                  key=lambda r: (not in_trouble(r), r[5] == "no limiter now", str(r[0])))
    trouble = [r[0] for r in rows if in_trouble(r)]
    message = f"{len(rows)} provider account(s)" + (f" · ⚠ trouble: {', '.join(trouble)}" if trouble else " · all well")
    return message, pd.DataFrame(rows, columns=PROVIDER_COLUMNS)


def deep_link(request: gr.Request) -> str | None:
    """`?run=<id>` in the page's address chooses that run."""
    value = (request.query_params.get("run") if request is not None else None) or ""
    return value.strip() or None


def opened_tab(request: gr.Request) -> Any:
    """`?view=alerts` in the page's address opens the Alerts tab (the shell's bar links there)."""
    view = request.query_params.get("view") if request is not None else None
    return gr.Tabs(selected="alerts") if view == "alerts" else gr.skip()


def _row_run_id(event: gr.SelectData) -> str:
    return str(event.row_value[0])


def build_runs_panel(
    list_runs: ListRuns,
    get_run: GetRun,
    follow: FollowRun,
    actions: RunActions | None = None,
    providers: ReadProviders | None = None,
    alerts: AlertAccess | None = None,
    quarantine: ReadQuarantine | None = None,
    output: ReadOutput | None = None,
    *,
    refresh_seconds: float = 5.0,
) -> gr.Blocks:
    """The panel's Blocks; `get_run` raises KeyError (with a message) for an unknown run id.
    Without `actions`, the panel only reads; with `alerts`, it has an Alerts tab (`?view=alerts`
    opens on it)."""
    refresh = functools.partial(list_view, list_runs)
    watches = Watches()

    def watch(run_id: str | None, request: gr.Request) -> Iterator[tuple[str, pd.DataFrame, pd.DataFrame]]:
        yield from watch_view(get_run, follow, watches, run_id, request)

    def sample(run_id: str | None, output_of: str | None) -> tuple[Any, Any]:
        """The run's quarantine, and its output read again if it is open (a run that was going
        has one now); another run's output, if one was open, closes."""
        if output is not None and run_id and output_of == run_id:
            return quarantine_view(quarantine, run_id), output_view(output, get_run, run_id)
        return quarantine_view(quarantine, run_id), gr.update(visible=False, value=pd.DataFrame())

    def stop_watching(request: gr.Request) -> None:
        watches.end(request.session_hash or "")

    with gr.Blocks(title="augment · runs") as panel:
        timer = gr.Timer(refresh_seconds)
        with gr.Tabs(selected="runs", elem_id="runs-tabs") as tabs:
            with gr.Tab("Runs", id="runs", elem_id="tab-runs"):
                status = gr.Markdown("Loading runs…", elem_id="runs-status")
                with gr.Row(equal_height=True):
                    workflow = gr.Textbox(label="Workflow", placeholder="any", elem_id="filter-workflow",
                                          scale=2)
                    state = gr.Dropdown(label="Status", choices=[ANY, *STATUSES], value=ANY,
                                        elem_id="filter-status", scale=1)
                    since = gr.Dropdown(label="Created", choices=list(SINCE), value="any time",
                                        elem_id="filter-since", scale=1)
                    refresh_button = gr.Button("Refresh", scale=0)
                table = gr.Dataframe(
                    value=runs_table([]), headers=RUN_COLUMNS, interactive=False, elem_id="runs-table",
                    max_height=420, label="Runs",
                )
                chosen = gr.Dropdown(
                    label="Run", choices=[], value=None, allow_custom_value=True, elem_id="run-choice",
                    info="Pick a run, type an id (or the start of one), or click a row above. It updates live.",
                )
                detail = gr.Markdown(NO_RUN_CHOSEN, elem_id="run-detail")
                with gr.Row():
                    open_output = gr.Button("Open output dataset", scale=0, min_width=240, elem_id="run-open-output",
                                            visible=output is not None)
                    if actions is not None:
                        cancel_button = gr.Button("Cancel run…", variant="stop", scale=0, elem_id="run-cancel")
                        resume_button = gr.Button("Resume run…", scale=0, elem_id="run-resume")
                        outcome = gr.Markdown("", elem_id="run-action-outcome")
                if actions is not None:
                    with gr.Row(visible=False, elem_id="run-confirm") as confirm:
                        question = gr.Markdown("")
                        yes = gr.Button("Yes, do it", variant="primary", scale=0, elem_id="run-confirm-yes")
                        no = gr.Button("No", scale=0, elem_id="run-confirm-no")
                    pending = gr.State(None)
                output_table = gr.Dataframe(interactive=False, elem_id="run-output", max_height=360,
                                            label="Output", visible=False)
                output_of = gr.State(None)  # the run whose output is open
                steps = gr.Dataframe(
                    value=steps_table(None), headers=STEP_COLUMNS, interactive=False, elem_id="run-steps",
                    label="Steps",
                )
                failures = gr.Dataframe(
                    value=failures_table([]), headers=FAILURE_COLUMNS, interactive=False, elem_id="run-failures",
                    label="Records that failed, with why", max_height=300,
                )
                quarantined = gr.Dataframe(
                    headers=QUARANTINE_COLUMNS, interactive=False, elem_id="run-quarantine", wrap=True,
                    label="Quarantined records, with why", max_height=300, column_widths=["8%", "14%", "38%", "40%"],
                    visible=quarantine is not None,
                )
                if providers is not None:
                    with gr.Accordion("Provider health", open=False):
                        providers_status = gr.Markdown("", elem_id="providers-status")
                        providers_table = gr.Dataframe(
                            headers=PROVIDER_COLUMNS, interactive=False, elem_id="providers-table", wrap=True,
                            show_search="search",
                            label="Provider accounts (this cluster's limiters; today: runs created today, UTC)")
            if alerts is not None:
                with gr.Tab("Alerts", id="alerts", elem_id="tab-alerts"):
                    build_alerts_tab(alerts, panel, timer)

        filters = [chosen, workflow, state, since]
        listing = [status, table, chosen]
        showing = [detail, steps, failures]
        # Once the run's follow ends (at once for an ended run): its quarantine, which is final then.
        sampling: dict[str, Any] = dict(fn=sample, inputs=[chosen, output_of], outputs=[quarantined, output_table],
                                        show_progress="hidden", api_visibility="private")
        # The list refreshes on a timer (a cheap query); the chosen run follows its events.
        watching: dict[str, Any] = dict(fn=watch, inputs=chosen, outputs=showing, concurrency_limit=None,
                                        trigger_mode="multiple", show_progress="hidden", api_visibility="private")
        def first_view(workflow: str | None, status: str | None, since: str | None,
                       request: gr.Request) -> tuple[str, Any, Any]:
            """The list and the run of a deep link (`?run=<id>`) in one round trip."""
            return list_view(list_runs, deep_link(request), workflow, status, since)

        panel.load(first_view, [workflow, state, since], listing, api_visibility="private").then(
            **watching).then(**sampling)
        if alerts is not None:
            panel.load(opened_tab, None, tabs, api_visibility="private")
        refresh_button.click(refresh, filters, listing, api_name="list_runs")
        for trigger in (workflow.submit, state.input, since.input):
            trigger(refresh, filters, listing, api_visibility="private")
        timer.tick(refresh, filters, listing, show_progress="hidden", api_visibility="private")
        chosen.input(**{**watching, "api_visibility": "public"}, api_name="watch_run").then(**sampling)
        table.select(_row_run_id, None, chosen, api_visibility="private").then(**watching).then(**sampling)
        panel.unload(stop_watching)
        if output is not None:
            def read_output(run_id: str | None) -> tuple[Any, str | None]:
                return output_view(output, get_run, run_id), run_id

            open_output.click(read_output, chosen, [output_table, output_of], api_name="open_output")
        if providers is not None:
            def read_providers() -> tuple[str, Any]:
                return providers_view(providers)

            health = [providers_status, providers_table]
            panel.load(read_providers, None, health, api_name="provider_health")
            timer.tick(read_providers, None, health, show_progress="hidden", api_visibility="private")
        if actions is not None:
            # Closures, not partials: Gradio hands gr.Request only to a parameter it can see.
            def ask_cancel(run_id: str | None, request: gr.Request) -> tuple[Any, str, tuple[str, str] | None]:
                return ask_view(actions, "cancel", run_id, request)

            def ask_resume(run_id: str | None, request: gr.Request) -> tuple[Any, str, tuple[str, str] | None]:
                return ask_view(actions, "resume", run_id, request)

            def act(pending: tuple[str, str] | None, request: gr.Request) -> tuple[Any, str]:
                return act_view(actions, pending, request)

            for button, ask in ((cancel_button, ask_cancel), (resume_button, ask_resume)):
                button.click(ask, chosen, [confirm, question, pending], api_visibility="private")
            # After the action: the list, and the run followed again (a resumed run is live anew).
            yes.click(act, pending, [confirm, outcome], api_visibility="private").then(
                refresh, filters, listing, api_visibility="private").then(**watching).then(**sampling)
            no.click(lambda: (gr.update(visible=False), None), None, [confirm, pending], api_visibility="private")
    return panel
