"""Alerts: rules operators keep in the metadata store, the conditions they watch, and the alerts
they fired. What judges a rule is here, with no Ray: the cluster's alert watcher
(actors/alert_watcher.py) hands it the events of the bus and, on a timer, what it reads of
running runs, provider limiters and consumer groups; the runs panel and the shell read the
alerts back.

An alert is about one subject ("run <id>", "provider <account>", "group <name>"): at most one is
open per rule and subject. Conditions that can clear (a stalled run moves again, a circuit closes)
resolve their alert by themselves; a failed or over-quarantined run stays a fact until someone
marks its alert resolved (or, for a failed run, it is resumed to success).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field, ValidationError, model_validator

from augment_core.store import MetadataStore, RunRecord, aware, utcnow
from augment_core.store import alert_rules_table as rules_table
from augment_core.store import alerts_table as alerts_table


@dataclass(frozen=True)
class Kind:
    title: str
    threshold: str | None  # what the threshold means; None: the kind takes none
    minutes: bool = False  # it needs `minutes`
    clears: bool = True  # resolved by itself when the condition no longer holds


KINDS: dict[str, Kind] = {
    "run_failed": Kind("a run ended failed", None, clears=False),
    "run_stalled": Kind("a running run made no progress for `minutes`", None, minutes=True),
    "rate_429": Kind("a provider account's replies of the last 5 minutes were 429 in this share or more",
                     "share of replies, 0-1"),
    "circuit_open": Kind("a provider account's circuit is open", None),
    "budget_share": Kind("a run spent this share of its budget or more", "share of the budget, 0-1", clears=False),
    "quarantine_share": Kind("a finished run quarantined more than this share of its records",
                             "share of records in, 0-1", clears=False),
    "consumer_lag": Kind("a consumer group is this many events or messages behind", "events or messages"),
}
RUN_KINDS = ("run_failed", "run_stalled", "budget_share", "quarantine_share")  # the ones `workflow` narrows
WEBHOOK_ENV = re.compile(r"AUGMENT_ALERT_WEBHOOK_[A-Z0-9_]+")
RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}")
CONDITION_CLEARED = "the condition cleared"


class AlertRule(BaseModel):
    """One rule as operators write it."""

    model_config = {"extra": "forbid"}

    id: int | None = None
    name: str = Field(description="Unique: letters, digits, spaces, '_', '.', '-'")
    kind: str
    threshold: float | None = None
    minutes: float | None = Field(default=None, gt=0, le=7 * 24 * 60)
    workflow: str | None = Field(default=None, description="Only runs of this workflow (run kinds); all when empty")
    webhook_env: str | None = Field(
        default=None, description="An AUGMENT_ALERT_WEBHOOK_* variable of the cluster holding the URL to POST to")
    enabled: bool = True
    updated_by: str = ""
    updated_at: dt.datetime | None = None

    @model_validator(mode="after")
    def _fits_its_kind(self) -> AlertRule:
        if not RULE_NAME.fullmatch(self.name):
            raise ValueError(f"name {self.name!r}: 1-100 letters, digits, spaces, '_', '.' or '-', starting"
                             " with a letter or digit")
        kind = KINDS.get(self.kind)
        if kind is None:
            raise ValueError(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if kind.threshold is None and self.threshold is not None:
            raise ValueError(f"threshold: a {self.kind} rule takes none")
        if kind.threshold is not None:
            if self.threshold is None:
                raise ValueError(f"threshold: a {self.kind} rule needs one ({kind.threshold})")
            if self.kind == "consumer_lag":
                if self.threshold < 1:
                    raise ValueError("threshold: a lag of at least 1")
            elif not 0 < self.threshold <= 1:
                raise ValueError(f"threshold: {self.threshold} is not a share between 0 (excluded) and 1")
        if kind.minutes and self.minutes is None:
            raise ValueError(f"minutes: a {self.kind} rule needs how many minutes without progress")
        if not kind.minutes and self.minutes is not None:
            raise ValueError(f"minutes: a {self.kind} rule takes none")
        if self.workflow and self.kind not in RUN_KINDS:
            raise ValueError(f"workflow: a {self.kind} rule is not about runs, so it cannot be narrowed to one")
        if self.webhook_env and not WEBHOOK_ENV.fullmatch(self.webhook_env):
            raise ValueError(f"webhook_env {self.webhook_env!r}: the name of a variable AUGMENT_ALERT_WEBHOOK_<NAME>"
                             " (the URL stays out of the store)")
        return self

    def covers(self, workflow: str) -> bool:
        return not self.workflow or self.workflow == workflow


def rule_errors(exc: ValidationError) -> list[str]:
    """Each problem of a rule in one line, by field when pydantic knows it."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return lines


class Alert(BaseModel):
    id: int
    rule_id: int
    rule: str
    kind: str
    subject: str
    run_id: str | None
    state: str
    message: str
    value: float | None
    fired_at: dt.datetime
    resolved_at: dt.datetime | None
    resolved_by: str | None
    delivery: str | None


class RuleTaken(Exception):
    """Another rule has that name."""


class AlertStore:
    """Rules and alerts in the metadata store."""

    def __init__(self, store: MetadataStore) -> None:
        self.engine = store.engine

    # rules --------------------------------------------------------------------------------------
    def rules(self, enabled_only: bool = False) -> list[AlertRule]:
        query = rules_table.select().order_by(rules_table.c.name)
        if enabled_only:
            query = query.where(rules_table.c.enabled.is_(True))
        with self.engine.connect() as conn:
            return [_rule(r) for r in conn.execute(query).mappings()]

    def save_rule(self, rule: AlertRule, by: str) -> AlertRule:
        """Insert the rule, or update the one of its id; a name another rule has is RuleTaken."""
        values = rule.model_dump(exclude={"id", "updated_by", "updated_at"})
        values.update(updated_by=by[:200], updated_at=utcnow())
        try:
            with self.engine.begin() as conn:
                if rule.id is None:
                    rule_id = int(conn.execute(rules_table.insert().values(**values)).inserted_primary_key[0])  # type: ignore[index]
                else:
                    rule_id = rule.id
                    update = rules_table.update().where(rules_table.c.id == rule_id).values(**values)
                    if not conn.execute(update).rowcount:
                        raise KeyError(f"no alert rule {rule_id}")
        except sa.exc.IntegrityError:
            raise RuleTaken(f"another alert rule is named {rule.name!r}") from None
        return AlertRule(id=rule_id, **values)

    def rule(self, rule_id: int) -> AlertRule | None:
        with self.engine.connect() as conn:
            row = conn.execute(rules_table.select().where(rules_table.c.id == rule_id)).mappings().first()
        return _rule(row) if row is not None else None

    def rule_named(self, name: str) -> AlertRule | None:
        with self.engine.connect() as conn:
            row = conn.execute(rules_table.select().where(rules_table.c.name == name)).mappings().first()
        return _rule(row) if row is not None else None

    def delete_rule(self, name: str) -> bool:
        """The rule is gone; its open alerts are resolved, saying so."""
        rule = self.rule_named(name)
        if rule is None:
            return False
        with self.engine.begin() as conn:
            conn.execute(rules_table.delete().where(rules_table.c.id == rule.id))
            conn.execute(alerts_table.update()
                         .where(alerts_table.c.rule_id == rule.id, alerts_table.c.state == "firing")
                         .values(state="resolved", resolved_at=utcnow(), resolved_by="its rule was deleted",
                                 open_key=None))
        return True

    # alerts -------------------------------------------------------------------------------------
    def fire(self, rule: AlertRule, subject: str, message: str, value: float | None = None,
             run_id: str | None = None, *, once: bool = False) -> Alert | None:
        """A new firing alert; None when one is already open for this rule and subject (or, with
        `once`, when there ever was one: a finished run's facts are judged once)."""
        assert rule.id is not None
        if once and self._ever(rule.id, subject):
            return None
        row = {"rule_id": rule.id, "rule": rule.name, "kind": rule.kind, "subject": subject[:300], "run_id": run_id,
               "state": "firing", "message": message, "value": value, "fired_at": utcnow(),
               "open_key": _open_key(rule.id, subject)}
        try:
            with self.engine.begin() as conn:
                alert_id = int(conn.execute(alerts_table.insert().values(**row)).inserted_primary_key[0])  # type: ignore[index]
        except sa.exc.IntegrityError:  # open already
            return None
        return Alert(id=alert_id, resolved_at=None, resolved_by=None, delivery=None, **row)

    def resolve(self, rule_id: int, subject: str, by: str = CONDITION_CLEARED) -> Alert | None:
        """Resolve the open alert of this rule and subject; None when none is open."""
        with self.engine.begin() as conn:
            row = conn.execute(alerts_table.select().where(
                alerts_table.c.open_key == _open_key(rule_id, subject))).mappings().first()
            if row is None:
                return None
            conn.execute(alerts_table.update().where(alerts_table.c.id == row["id"], alerts_table.c.state == "firing")
                         .values(state="resolved", resolved_at=utcnow(), resolved_by=by[:200], open_key=None))
        return self.get(int(row["id"]))

    def resolve_by_hand(self, alert_id: int, by: str) -> Alert:
        """An operator marks an alert resolved; KeyError when there is no such open alert."""
        alert = self.get(alert_id)
        if alert is None or alert.state != "firing":
            raise KeyError(f"alert {alert_id} is not open" if alert else f"no alert {alert_id}")
        resolved = self.resolve(alert.rule_id, alert.subject, by)
        if resolved is None:
            raise KeyError(f"alert {alert_id} is not open")
        return resolved

    def record_delivery(self, alert_id: int, delivery: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(alerts_table.update().where(alerts_table.c.id == alert_id).values(delivery=delivery[:2000]))

    def get(self, alert_id: int) -> Alert | None:
        with self.engine.connect() as conn:
            row = conn.execute(alerts_table.select().where(alerts_table.c.id == alert_id)).mappings().first()
        return _alert(row) if row is not None else None

    def firing(self, rule_id: int | None = None) -> list[Alert]:
        """Open alerts, newest first."""
        query = alerts_table.select().where(alerts_table.c.state == "firing").order_by(alerts_table.c.id.desc())
        if rule_id is not None:
            query = query.where(alerts_table.c.rule_id == rule_id)
        with self.engine.connect() as conn:
            return [_alert(r) for r in conn.execute(query).mappings()]

    def recent(self, limit: int = 100) -> list[Alert]:
        """Open and resolved alerts, newest first."""
        query = alerts_table.select().order_by(alerts_table.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_alert(r) for r in conn.execute(query).mappings()]

    def _ever(self, rule_id: int, subject: str) -> bool:
        query = sa.select(alerts_table.c.id).where(alerts_table.c.rule_id == rule_id,
                                                    alerts_table.c.subject == subject).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None


def _open_key(rule_id: int, subject: str) -> str:
    return f"{rule_id}:{subject}"[:320]


def _rule(row: sa.RowMapping | Mapping[str, Any]) -> AlertRule:
    return AlertRule(**{**row, "updated_at": aware(row["updated_at"])})


def _alert(row: sa.RowMapping | Mapping[str, Any]) -> Alert:
    fields = {k: v for k, v in row.items() if k != "open_key"}
    return Alert(**{**fields, "fired_at": aware(row["fired_at"]), "resolved_at": aware(row["resolved_at"])})


# judging ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """A rule's verdict on one subject: firing (with why), or clear."""

    rule: AlertRule
    subject: str
    firing: bool
    message: str = ""
    value: float | None = None
    run_id: str | None = None


def run_subject(run_id: str) -> str:
    return f"run {run_id}"


def judge_finished_run(run: RunRecord, rules: Iterable[AlertRule]) -> list[Finding]:
    """What a run that ended says to the run kinds: failed, its quarantine share, its final spend;
    and it no longer stalls."""
    findings = []
    subject = run_subject(run.id)
    for rule in rules:
        if not rule.covers(run.workflow):
            continue
        if rule.kind == "run_failed":
            firing = run.status == "failed"
            findings.append(Finding(rule, subject, firing, f"run {run.id} of {run.workflow} failed: "
                                    f"{(run.error or 'no error recorded').splitlines()[0][:300]}", run_id=run.id))
        elif rule.kind == "quarantine_share":
            total = run.counts.get("in", 0)
            share = run.counts.get("quarantined", 0) / total if total else 0.0
            assert rule.threshold is not None
            if share > rule.threshold:
                findings.append(Finding(rule, subject, True, f"run {run.id} of {run.workflow} quarantined "
                                        f"{run.counts.get('quarantined', 0):,} of {total:,} records ({share:.1%},"
                                        f" above {rule.threshold:.1%})", share, run.id))
        elif rule.kind == "budget_share":
            findings.extend(judge_budget(run, rule))
        elif rule.kind == "run_stalled":
            findings.append(Finding(rule, subject, False, run_id=run.id))
    return findings


def judge_budget(run: RunRecord, rule: AlertRule) -> list[Finding]:
    budget = (run.cost or {}).get("budget_usd")
    if not budget or not rule.covers(run.workflow):
        return []
    spent = float((run.cost or {}).get("total_usd") or 0.0)
    share = spent / float(budget)
    assert rule.threshold is not None
    return [Finding(rule, run_subject(run.id), share >= rule.threshold,
                    f"run {run.id} of {run.workflow} spent ${spent:.4f} of its ${float(budget):.2f} budget"
                    f" ({share:.0%}, threshold {rule.threshold:.0%})", round(share, 4), run.id)]


def judge_stalled(run: RunRecord, last_progress: dt.datetime, now: dt.datetime, rule: AlertRule) -> list[Finding]:
    if not rule.covers(run.workflow):
        return []
    assert rule.minutes is not None
    quiet = (now - last_progress).total_seconds() / 60
    return [Finding(rule, run_subject(run.id), quiet >= rule.minutes,
                    f"run {run.id} of {run.workflow} made no progress for {quiet:.1f} min"
                    f" (rule: {rule.minutes:g} min)", round(quiet, 2), run.id)]


def judge_limiter(snapshot: Mapping[str, Any], rule: AlertRule) -> list[Finding]:
    """A provider account's limiter (`RateLimiter.snapshot` with its account) against rate_429 or
    circuit_open; a limiter that did not answer is judged next time."""
    account = str(snapshot.get("account", "?"))
    subject = f"provider {account}"
    if "error" in snapshot:
        return []
    if rule.kind == "circuit_open":
        state = snapshot.get("circuit", "closed")
        return [Finding(rule, subject, state == "open",
                        f"provider account {account}: circuit open after {snapshot.get('consecutive_failures', 0)}"
                        " consecutive failures; calls are refused until it half-opens")]
    recent = snapshot.get("recent") or {}
    replies = sum(int(recent.get(k, 0)) for k in ("answered", "rate_limited", "failures"))
    limited = int(recent.get("rate_limited", 0))
    share = limited / replies if replies else 0.0
    assert rule.threshold is not None
    return [Finding(rule, subject, limited > 0 and share >= rule.threshold,
                    f"provider account {account}: {limited} of {replies} replies in the last 5 minutes were 429"
                    f" ({share:.0%}, threshold {rule.threshold:.0%})", round(share, 4))]


def judge_lags(lags: Mapping[str, int], rule: AlertRule) -> list[Finding]:
    """Consumer groups ('events group alerts', 'stream orders/ingest') and how far behind they are."""
    assert rule.threshold is not None
    return [Finding(rule, subject, lag >= rule.threshold,
                    f"{subject} is {lag:,} behind (threshold {rule.threshold:,.0f})", float(lag))
            for subject, lag in lags.items()]
