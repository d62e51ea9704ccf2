"""The event bus: run and review events, each with its run id and a per-run sequence number.

One small interface, two backends: Redis Streams when AUGMENT_REDIS_URL is set, tables of the
metadata store otherwise (SQLite or PostgreSQL), so that a follower in another process sees the
events either way. Every event goes to its run's stream (read by `augment events` and the SSE
endpoint) and to one cluster-wide stream read by consumer groups (`EventBus.consume`).

Publishing never fails: a backend error is logged and the event is lost (see `publish`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

import redis
import sqlalchemy as sa
from pydantic import BaseModel, Field
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from augment_core.settings import Settings
from augment_core.store import FINAL_STATUSES, RunRecord, insert_ignoring, metadata, open_store, utcnow

EVENT_TYPES = (
    "run.started", "step.progress", "record.failed", "run.finished",
    "review.created", "review.accepted", "review.edited", "review.rejected", "review.rerun",
)
log = logging.getLogger(__name__)


class Event(BaseModel):
    run_id: str
    seq: int = Field(description="1, 2, 3... within the run; 0 when the event could not be stored")
    type: str
    data: dict[str, Any] = Field(default_factory=dict)
    at: str = Field(description="ISO 8601 time of publishing, UTC")


class DeadLetter(BaseModel):
    """An event a consumer group's handler raised on, with the error; it is acked all the same."""

    group: str
    consumer: str
    error: str
    event: Event
    at: str


Handler = Callable[[Event], None]


class EventBus(Protocol):
    def publish(self, run_id: str, type: str, data: dict[str, Any]) -> Event: ...

    def read(self, run_id: str, after: int = 0, limit: int = 1000, block_seconds: float = 0) -> list[Event]: ...

    def consume(
        self, group: str, consumer: str, handler: Handler, *, stop: threading.Event | None = None,
        max_events: int | None = None, idle_seconds: float = 0, claim_after_seconds: float = 60,
        batch: int = 100, new_group_at_end: bool = False,
    ) -> int: ...

    def dead_letters(self, group: str, limit: int = 1000) -> list[DeadLetter]: ...

    def group_lags(self) -> dict[str, int]: ...


# Where a consumed event sits: a Redis stream entry id, or a row id of the events table.
MessageId = str | int


def _now() -> str:
    return utcnow().isoformat()


def _error_text(exc: BaseException) -> str:
    """One line, no traceback: what the handler or the backend said."""
    text = str(exc).strip()
    return (f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__)[:2000]


def _checked(type: str, data: dict[str, Any]) -> str:
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r} (known: {', '.join(EVENT_TYPES)})")
    return json.dumps(data, ensure_ascii=False, default=str)


class _Base:
    """What both backends share: publishing that never raises, and the consumer loop."""

    def publish(self, run_id: str, type: str, data: dict[str, Any]) -> Event:
        """Store the event and return it with its sequence number. A backend error is logged and
        the event is returned with seq 0: it is lost for followers and consumers (the run row
        still holds the run's outcome). An unknown type is a programming error: ValueError."""
        payload = _checked(type, data)
        at = _now()
        try:
            seq = self._append(run_id, type, payload, at)
        except Exception as exc:  # noqa: BLE001 - a run must not fail because its events cannot be stored
            log.warning("event %s of run %s lost: event bus unavailable: %s", type, run_id, _error_text(exc))
            seq = 0
        return Event(run_id=run_id, seq=seq, type=type, data=json.loads(payload), at=at)

    def consume(
        self, group: str, consumer: str, handler: Handler, *, stop: threading.Event | None = None,
        max_events: int | None = None, idle_seconds: float = 0, claim_after_seconds: float = 60,
        batch: int = 100, new_group_at_end: bool = False,
    ) -> int:
        """Hand the cluster-wide stream's events to `handler` as consumer `consumer` of `group`
        (created at the first event retained when new, or after the last one with
        `new_group_at_end`: for a consumer that has no use for the past). Each event is acked once the handler
        returns; one it raises on goes to the group's dead letters with the error, is acked, and
        the loop carries on. Events another consumer took and did not ack for
        `claim_after_seconds` (it died) are taken over. Returns the number of events handled, once
        `stop` is set, `max_events` were handled, or nothing came for `idle_seconds` (0: forever)."""
        handled = 0
        quiet_since = time.monotonic()
        while not (stop is not None and stop.is_set()) and (max_events is None or handled < max_events):
            want = batch if max_events is None else min(batch, max_events - handled)
            try:
                self._ensure_group(group, new_group_at_end)
                messages = self._take(group, consumer, want, claim_after_seconds, block_seconds=1.0)
            except Exception as exc:  # noqa: BLE001 - an outage: wait and try again, lose nothing
                log.warning("consumer %s/%s cannot read events: %s", group, consumer, _error_text(exc))
                time.sleep(1.0)
                messages = []
            for message_id, event, error in messages:
                if error is None:
                    try:
                        handler(event)
                    except Exception as exc:  # noqa: BLE001 - one bad event must not stop the consumer
                        error = _error_text(exc)
                try:
                    if error is not None:
                        log.warning("event %s of run %s dead-lettered by %s/%s: %s",
                                    event.seq, event.run_id, group, consumer, error)
                        self._dead_letter(group, consumer, message_id, event, error)
                    self._ack(group, message_id)
                except Exception as exc:  # noqa: BLE001 - unacked, so it is delivered again later
                    log.warning("event %s of run %s not acked by %s/%s: %s",
                                event.seq, event.run_id, group, consumer, _error_text(exc))
                handled += 1
            if messages:
                quiet_since = time.monotonic()
            elif idle_seconds and time.monotonic() - quiet_since >= idle_seconds:
                break
        return handled

    # backend hooks ------------------------------------------------------------------------------
    def _append(self, run_id: str, type: str, payload: str, at: str) -> int:
        raise NotImplementedError

    def _ensure_group(self, group: str, at_end: bool) -> None:
        """Create the group if it does not exist: at the first event retained, or after the last."""
        raise NotImplementedError

    def _take(
        self, group: str, consumer: str, count: int, claim_after_seconds: float, block_seconds: float
    ) -> list[tuple[MessageId, Event, str | None]]:
        """(message id, event, None) per message, or (id, placeholder event, why) for one that
        cannot be read (it goes to the dead letters)."""
        raise NotImplementedError

    def _ack(self, group: str, message_id: MessageId) -> None:
        raise NotImplementedError

    def _dead_letter(self, group: str, consumer: str, message_id: MessageId, event: Event, error: str) -> None:
        raise NotImplementedError


# Redis Streams ------------------------------------------------------------------------------
# INCR and both XADDs in one script: seq is gap-free and in stream order with any number of
# publishers. The run stream's entry id is 0-<seq>, so reading after N is reading after 0-N.
# (The keys differ in hash slot: on Redis Cluster this needs hash tags; we run plain Redis.)
_PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], '0-' .. seq, 'run_id', ARGV[1], 'seq', seq, 'type', ARGV[2], 'data', ARGV[3], 'at', ARGV[4])
redis.call('XADD', KEYS[3], '*', 'run_id', ARGV[1], 'seq', seq, 'type', ARGV[2], 'data', ARGV[3], 'at', ARGV[4])
return seq
"""
LAG_SCAN_CAP = 100_000  # a group's lag counted entry by entry stops here
MAX_BLOCK_SECONDS = 5.0  # one XREAD never blocks past the socket timeout
Entries = list[tuple[str, dict[str, str]]]  # what XRANGE and XREAD answer: (id, fields), decoded


class RedisEventBus(_Base):
    """Streams `augment:events:run:<id>` (one per run), `augment:events` (cluster-wide, for
    consumer groups) and `augment:events:dead:<group>`. Nothing is trimmed: retention is an
    operator's XTRIM, so no unconsumed event is dropped silently."""

    PREFIX = "augment:events"

    def __init__(self, url: str) -> None:
        # Few, short retries: a publish must not stall a run while Redis is down.
        self.client = redis.Redis.from_url(
            url, socket_timeout=MAX_BLOCK_SECONDS + 5, socket_connect_timeout=2,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2), decode_responses=True,
        )
        self._script = self.client.register_script(_PUBLISH)
        self._groups: set[str] = set()

    def _run_key(self, run_id: str) -> str:
        return f"{self.PREFIX}:run:{run_id}"

    def _append(self, run_id: str, type: str, payload: str, at: str) -> int:
        keys = [f"{self.PREFIX}:seq:{run_id}", self._run_key(run_id), self.PREFIX]
        return int(self._script(keys=keys, args=[run_id, type, payload, at]))

    def read(self, run_id: str, after: int = 0, limit: int = 1000, block_seconds: float = 0) -> list[Event]:
        """Events of a run with seq > after, oldest first; waits up to block_seconds for one."""
        key = self._run_key(run_id)
        entries = cast(Entries, self.client.xrange(key, min=f"(0-{after}", max="+", count=limit) if after else
                       self.client.xrange(key, count=limit))
        deadline = time.monotonic() + block_seconds
        while not entries and (left := deadline - time.monotonic()) > 0:
            found = cast(list[tuple[str, Entries]] | None, self.client.xread(
                {key: f"0-{after}"}, count=limit, block=max(1, int(min(left, MAX_BLOCK_SECONDS) * 1000))
            ))
            entries = found[0][1] if found else []
        return [_event_of(fields) for _, fields in entries]

    def _ensure_group(self, group: str, at_end: bool) -> None:
        if group in self._groups:
            return
        try:
            self.client.xgroup_create(self.PREFIX, group, id="$" if at_end else "0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(group)

    def _take(
        self, group: str, consumer: str, count: int, claim_after_seconds: float, block_seconds: float
    ) -> list[tuple[MessageId, Event, str | None]]:
        try:
            # First what dead consumers left unacked, then new messages.
            _, claimed, *_ = self.client.xautoclaim(
                self.PREFIX, group, consumer, min_idle_time=int(claim_after_seconds * 1000), start_id="0-0",
                count=count,
            )
            entries = [(i, f) for i, f in claimed if f]  # a claimed id whose entry was trimmed has no fields
            if not entries:
                found = cast(list[tuple[str, Entries]] | None, self.client.xreadgroup(
                    group, consumer, {self.PREFIX: ">"}, count=count,
                    block=int(min(block_seconds, MAX_BLOCK_SECONDS) * 1000)))
                entries = found[0][1] if found else []
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):  # Redis lost its data (a restart without persistence): make it again
                self._groups.discard(group)
            raise
        return [_parsed(message_id, fields) for message_id, fields in entries]

    def _ack(self, group: str, message_id: MessageId) -> None:
        self.client.xack(self.PREFIX, group, message_id)

    def _dead_letter(self, group: str, consumer: str, message_id: MessageId, event: Event, error: str) -> None:
        self.client.xadd(f"{self.PREFIX}:dead:{group}", {
            "group": group, "consumer": consumer, "message_id": message_id, "error": error,
            "event": event.model_dump_json(), "at": _now(),
        })

    def group_lags(self) -> dict[str, int]:
        """Each consumer group of the cluster-wide stream: events not yet handed out plus those
        handed out and not acked."""
        try:
            groups = self.client.xinfo_groups(self.PREFIX)
        except redis.ResponseError:  # no stream yet: nothing published, nobody behind
            return {}
        return {str(g["name"]): self._lag(g) + int(g.get("pending") or 0) for g in groups}

    def _lag(self, group: dict[str, Any]) -> int:
        """Redis knows a group's lag only once it has read (a group made at the end has not): else
        counted, up to LAG_SCAN_CAP."""
        if group.get("lag") is not None:
            return int(group["lag"])
        after = cast(Entries, self.client.xrange(self.PREFIX, min=f"({group['last-delivered-id']}", max="+",
                                                 count=LAG_SCAN_CAP))
        return len(after)

    def dead_letters(self, group: str, limit: int = 1000) -> list[DeadLetter]:
        entries = cast(Entries, self.client.xrange(f"{self.PREFIX}:dead:{group}", count=limit))
        return [DeadLetter(group=f["group"], consumer=f["consumer"], error=f["error"],
                           event=Event.model_validate_json(f["event"]), at=f["at"]) for _, f in entries]


def _event_of(fields: dict[str, str]) -> Event:
    return Event(run_id=fields["run_id"], seq=int(fields["seq"]), type=fields["type"],
                 data=json.loads(fields["data"]), at=fields["at"])


def _parsed(message_id: MessageId, fields: dict[str, str]) -> tuple[MessageId, Event, str | None]:
    try:
        return message_id, _event_of(fields), None
    except (KeyError, ValueError) as exc:  # written by something else: keep it, as raw text
        raw = Event(run_id=str(fields.get("run_id", "")), seq=0, type="unreadable",
                    data={"fields": dict(fields)}, at=_now())
        return message_id, raw, f"unreadable message {message_id}: {_error_text(exc)}"


# The metadata store ---------------------------------------------------------------------------
events_table = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),  # cluster-wide order
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.UniqueConstraint("run_id", "seq", name="uq_events_run_seq"),
)
event_counter_table = sa.Table(
    "event_counter",
    metadata,
    sa.Column("name", sa.String(16), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)
event_groups_table = sa.Table(
    "event_groups",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("delivered", sa.BigInteger, nullable=False),  # events.id up to which it was handed out
)
event_pending_table = sa.Table(
    "event_pending",
    metadata,
    sa.Column("group", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.BigInteger, primary_key=True),
    sa.Column("consumer", sa.String(200), nullable=False),
    sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
)
event_dead_letters_table = sa.Table(
    "event_dead_letters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("group", sa.String(200), nullable=False, index=True),
    sa.Column("consumer", sa.String(200), nullable=False),
    sa.Column("event_id", sa.BigInteger, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
)
_TABLES = (events_table, event_counter_table, event_groups_table, event_pending_table, event_dead_letters_table)
POLL_SECONDS = 0.2  # how often a blocked read looks again: the database has no push


class DatabaseEventBus(_Base):
    """Tables of the metadata store. One counter row is taken first in every publish: it orders
    publishers (SQLite and PostgreSQL alike), so `events.id` commits in increasing order and a
    consumer group's cursor never skips an event committed late."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._engine: sa.Engine | None = None
        self._groups: set[str] = set()

    @property
    def engine(self) -> sa.Engine:
        """Opened on first use, so that opening the bus never fails while the store is down."""
        if self._engine is None:
            engine = open_store(Settings(database_url=self.database_url)).engine
            for table in _TABLES:
                try:
                    table.create(engine, checkfirst=True)
                except sa.exc.DBAPIError:  # another process created it at the same moment
                    table.create(engine, checkfirst=True)
            self._engine = engine
            self._insert_ignore(event_counter_table, {"name": "events", "value": 0}, ["name"])
        return self._engine

    def _insert_ignore(self, table: sa.Table, row: dict[str, Any], keys: list[str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert_ignoring(self.engine, table, keys).values(**row))

    def _append(self, run_id: str, type: str, payload: str, at: str) -> int:
        counter = event_counter_table
        with self.engine.begin() as conn:
            event_id = conn.execute(
                counter.update().where(counter.c.name == "events").values(value=counter.c.value + 1)
                .returning(counter.c.value)
            ).scalar_one()
            seq = conn.execute(
                sa.select(sa.func.coalesce(sa.func.max(events_table.c.seq), 0) + 1).where(
                    events_table.c.run_id == run_id
                )
            ).scalar_one()
            conn.execute(
                events_table.insert().values(id=event_id, run_id=run_id, seq=seq, type=type, data=payload, at=at)
            )
        return int(seq)

    def read(self, run_id: str, after: int = 0, limit: int = 1000, block_seconds: float = 0) -> list[Event]:
        """Events of a run with seq > after, oldest first; waits up to block_seconds for one."""
        query = (
            sa.select(events_table).where(events_table.c.run_id == run_id, events_table.c.seq > after)
            .order_by(events_table.c.seq).limit(limit)
        )
        deadline = time.monotonic() + block_seconds
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
            if rows or time.monotonic() >= deadline:
                return [_row_event(r) for r in rows]
            time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    def _take(
        self, group: str, consumer: str, count: int, claim_after_seconds: float, block_seconds: float
    ) -> list[tuple[MessageId, Event, str | None]]:
        deadline = time.monotonic() + block_seconds
        while True:
            ids = self._claim(group, consumer, count, claim_after_seconds)
            if ids or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        if not ids:
            return []
        with self.engine.connect() as conn:
            rows = (
                conn.execute(sa.select(events_table).where(events_table.c.id.in_(ids)).order_by(events_table.c.id))
                .mappings()
                .all()
            )
        return [(r["id"], _row_event(r), None) for r in rows]

    def _ensure_group(self, group: str, at_end: bool) -> None:
        if group in self._groups:
            return
        start = 0
        if at_end:
            with self.engine.connect() as conn:
                start = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(events_table.c.id), 0))).scalar_one())
        self._insert_ignore(event_groups_table, {"name": group, "delivered": start}, ["name"])
        self._groups.add(group)

    def _claim(self, group: str, consumer: str, count: int, claim_after_seconds: float) -> list[int]:
        """Event ids handed to this consumer: first those left pending by a consumer silent for
        claim_after_seconds, then the next undelivered ones. The group row is written first, so
        two consumers of a group never take the same events."""
        groups, pending = event_groups_table, event_pending_table
        now = utcnow()
        with self.engine.begin() as conn:
            delivered = conn.execute(
                groups.update().where(groups.c.name == group).values(delivered=groups.c.delivered)
                .returning(groups.c.delivered)
            ).scalar_one()
            stale = conn.execute(
                sa.select(pending.c.event_id).where(
                    pending.c.group == group, pending.c.delivered_at < now - dt.timedelta(seconds=claim_after_seconds)
                ).order_by(pending.c.event_id).limit(count)
            ).scalars().all()
            if stale:
                conn.execute(pending.update().where(pending.c.group == group, pending.c.event_id.in_(stale))
                             .values(consumer=consumer, delivered_at=now))
                return list(stale)
            fresh = (
                conn.execute(
                    sa.select(events_table.c.id)
                    .where(events_table.c.id > delivered)
                    .order_by(events_table.c.id)
                    .limit(count)
                )
                .scalars()
                .all()
            )
            if fresh:
                conn.execute(pending.insert(), [
                    {"group": group, "event_id": i, "consumer": consumer, "delivered_at": now} for i in fresh
                ])
                conn.execute(groups.update().where(groups.c.name == group).values(delivered=fresh[-1]))
            return list(fresh)

    def _ack(self, group: str, message_id: MessageId) -> None:
        pending = event_pending_table
        with self.engine.begin() as conn:
            conn.execute(pending.delete().where(pending.c.group == group, pending.c.event_id == message_id))

    def _dead_letter(self, group: str, consumer: str, message_id: MessageId, event: Event, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(event_dead_letters_table.insert().values(
                group=group, consumer=consumer, event_id=message_id, error=error,
                event=event.model_dump_json(), at=_now(),
            ))

    def group_lags(self) -> dict[str, int]:
        groups, pending = event_groups_table, event_pending_table
        undelivered = (sa.select(sa.func.count()).where(events_table.c.id > groups.c.delivered)
                       .scalar_subquery())
        unacked = sa.select(sa.func.count()).where(pending.c.group == groups.c.name).scalar_subquery()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(groups.c.name, undelivered, unacked)).all()
        return {str(name): int(a) + int(b) for name, a, b in rows}

    def dead_letters(self, group: str, limit: int = 1000) -> list[DeadLetter]:
        table = event_dead_letters_table
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(table).where(table.c.group == group).order_by(table.c.id).limit(limit)
            ).mappings().all()
        return [DeadLetter(group=r["group"], consumer=r["consumer"], error=r["error"],
                           event=Event.model_validate_json(r["event"]), at=r["at"]) for r in rows]


def _row_event(row: sa.RowMapping) -> Event:
    return Event(run_id=row["run_id"], seq=row["seq"], type=row["type"], data=json.loads(row["data"]), at=row["at"])


END_GRACE_SECONDS = 15.0  # how long after its row turned final a run's last events may still arrive


def tail(
    bus: EventBus, run_id: str, after: int = 0, *, follow: bool, ended_at: Callable[[], dt.datetime | None],
    block_seconds: float = 1.0, limit: int = 1000,
) -> Iterator[list[Event]]:
    """A run's events after `after`, in batches, oldest first. Without `follow`, those there are
    now. With it, until run.finished; or, for a run that ended without one (its driver died),
    once END_GRACE_SECONDS passed since it ended and nothing more came. (The row turns
    final before run.finished is published, so a follower must not stop at the row alone.)
    An empty batch each `block_seconds` of quiet lets the caller check on its own client."""
    draining = not follow  # read what there is, without waiting, then stop
    while True:
        events = bus.read(run_id, after=after, limit=limit, block_seconds=0 if draining else block_seconds)
        if events:
            after = events[-1].seq
            yield events
            if follow and _ends_an_attempt(events) and not bus.read(run_id, after=after, limit=1) \
                    and ended_at() is not None:
                return  # (a resumed run goes on after its earlier attempt's run.finished)
            if len(events) == limit:
                continue
        if draining:
            return
        if not events:
            ended = ended_at()
            if ended is not None and (utcnow() - ended).total_seconds() >= END_GRACE_SECONDS:
                draining = True  # one more look: events stored while we asked
                continue
            yield []


def _ends_an_attempt(events: list[Event]) -> bool:
    """The last run.started / run.finished of these events is a run.finished."""
    marks = [e.type for e in events if e.type in ("run.started", "run.finished")]
    return bool(marks) and marks[-1] == "run.finished"


def ended_or_lost_at(record: RunRecord, stale_after_seconds: float) -> dt.datetime | None:
    """When a run ended, as a follower sees it: its finish, or, for a live row whose heartbeat
    has been silent past the stale window (its driver died; the reaper fails it soon, or never
    when no cluster is up), the moment it went stale. A read: it never writes the row."""
    if record.status in FINAL_STATUSES:
        return record.finished_at or dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    stale_at = (record.heartbeat_at or record.created_at) + dt.timedelta(seconds=stale_after_seconds)
    return stale_at if utcnow() >= stale_at else None


def follow_run(
    settings: Settings, run_id: str, after: int = 0, *, follow: bool, block_seconds: float = 1.0
) -> Iterator[list[Event]]:
    """`tail` of a stored run (`run_id` exact), for `augment events` and the SSE endpoint."""
    store = open_store(settings)

    def ended_at() -> dt.datetime | None:
        return ended_or_lost_at(store.get_run(run_id), settings.stale_after_seconds)

    return tail(open_bus(settings), run_id, after, follow=follow, ended_at=ended_at, block_seconds=block_seconds)


class BackgroundPublisher:
    """One run's events, published in order from a thread of its own: a slow or unreachable bus
    never holds up the run. The queue is unbounded (nothing dropped while the bus is slow);
    what is still queued when the process ends is lost, hence `flush` before a run ends."""

    def __init__(self, bus: EventBus, run_id: str) -> None:
        self.bus, self.run_id = bus, run_id
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any]] | threading.Event] = queue.SimpleQueue()
        threading.Thread(target=self._publish, name=f"events-{run_id}", daemon=True).start()

    def send(self, type: str, data: dict[str, Any]) -> None:
        _checked(type, data)  # a wrong type fails at the caller, not later in the thread
        self._queue.put((type, data))

    def flush(self, timeout: float) -> bool:
        """Wait until everything sent so far was published (or given up); False on timeout."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def _publish(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
            else:
                self.bus.publish(self.run_id, *item)


def open_bus(settings: Settings) -> EventBus:
    """The process-wide bus for these settings: Redis Streams when a Redis URL is set."""
    return _bus_for(settings.database_url, settings.redis_url)


@functools.lru_cache(maxsize=8)
def _bus_for(database_url: str, redis_url: str | None) -> EventBus:
    if redis_url:
        return RedisEventBus(redis_url)
    return DatabaseEventBus(database_url)
