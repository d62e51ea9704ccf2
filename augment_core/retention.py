"""Retention: what `augment gc` (and the cluster's reaper, every `gc_interval_minutes`) removes,
and what it never removes.

Removed, each kind by its own setting (0 keeps it for ever):
- **events** of runs that ended more than `retention_event_days` ago: their rows that old in the
  database bus, or their whole per-run stream (and sequence counter) in Redis once its last
  event is that old (a review decision published on an old run keeps its stream until it ages too);
- **stream**: entries of the cluster-wide Redis stream older than `retention_event_days` or past
  `retention_stream_maxlen` (MINID), never one a consumer group has not read and acked;
- **dead letters** and **audit** entries older than their retention;
- **cache**: result-cache entries unused for `retention_cache_days`, then the least recently used
  past `retention_cache_max_entries`.

Never removed, whatever its age:
- the events of a run that has not ended (pending or running; a resumed run is pending again),
  and every event a consumer group of the bus has not read and acked (in the database bus the
  events table is also the cluster-wide stream, so a group's cursor holds back the pruning of
  runs' events; `GcReport.held` says which group);
- cache entries used since the start of any live run, or of a failed or cancelled run that ended
  less than `retention_resumable_days` ago: `augment resume` answers the calls of the records it
  redoes from the cache (actors.runs.resume_run), so pruning them would make it pay twice.

A resume needs nothing from events: `resume_run` reads the run's row (status, spec, input
fingerprint; the coordinator carries on its cost with `CostLedger.carried_on(run.cost)`) and the
records already in its output folder (`BatchPlan.write` with `resume`); the coordinator only
publishes. So a resumable run's events are pruned by age like any ended run's; its next event
after a pruned stream simply starts at seq 1 again. Runs' rows, dataset versions, review items and
files are not retention's business.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterator
from typing import Any, cast

import redis
import sqlalchemy as sa

from augment_core.cache import USE_RESOLUTION, DatabaseCache, RedisCache, ResultCache, cache_table, open_cache
from augment_core.events import (
    DatabaseEventBus,
    EventBus,
    RedisEventBus,
    event_dead_letters_table,
    event_groups_table,
    event_pending_table,
    events_table,
    open_bus,
)
from augment_core.settings import Settings
from augment_core.store import FINAL_STATUSES, LIVE_STATUSES, MetadataStore, audit_table, open_store, runs_table, utcnow

KINDS = ("events", "stream", "dead_letters", "cache", "audit")
CHUNK = 1000  # rows or keys per statement or command: bounded work, however much is due
log = logging.getLogger(__name__)


@dataclasses.dataclass
class GcReport:
    """What one pass removed (or, dry, would remove) per kind, what it kept back and why, and the
    kinds it could not prune (their backend failed; the other kinds were pruned all the same)."""

    dry_run: bool
    removed: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    held: list[str] = dataclasses.field(default_factory=list)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        counts = ", ".join(f"{kind} {n}" for kind, n in self.removed.items())
        return f"{'would remove' if self.dry_run else 'removed'}: {counts}"


@dataclasses.dataclass(frozen=True)
class Cutoffs:
    """The moments before which each kind goes (None: kept for ever), and the moment since which
    cache entries are protected for unfinished runs (None: no run protects any)."""

    events: dt.datetime | None
    dead_letters: dt.datetime | None
    cache: dt.datetime | None
    audit: dt.datetime | None
    protected_since: dt.datetime | None
    stream_maxlen: int
    cache_max_entries: int


def collect_garbage(
    settings: Settings, *, dry_run: bool = False, now: dt.datetime | None = None,
    bus: EventBus | None = None, cache: ResultCache | None = None,
) -> GcReport:
    """One retention pass over the settings' event bus, result cache and audit log."""
    store = open_store(settings)
    now = now or utcnow()
    report = GcReport(dry_run=dry_run)
    cut = cutoffs(settings, store, now)
    bus = bus if bus is not None else open_bus(settings)
    cache = cache if cache is not None else open_cache(settings)
    _attempt(report, "events", lambda: _prune_bus(bus, store, cut, dry_run, report, now))
    _attempt(report, "cache", lambda: _prune_cache(cache, cut, dry_run, report, now))
    _attempt(report, "audit", lambda: _prune_audit(store, cut, dry_run, report))
    return report


def _attempt(report: GcReport, kind: str, prune: Callable[[], None]) -> None:
    try:
        prune()
    except (sa.exc.SQLAlchemyError, redis.RedisError, OSError) as exc:
        text = str(exc).strip().splitlines()
        report.errors[kind] = f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
        log.warning("retention of %s failed: %s", kind, report.errors[kind])


def _before(now: dt.datetime, days: float) -> dt.datetime | None:
    return now - dt.timedelta(days=days) if days > 0 else None


def cutoffs(settings: Settings, store: MetadataStore, now: dt.datetime) -> Cutoffs:
    return Cutoffs(
        events=_before(now, settings.retention_event_days),
        dead_letters=_before(now, settings.retention_dead_letter_days),
        cache=_before(now, settings.retention_cache_days),
        audit=_before(now, settings.retention_audit_days),
        protected_since=unfinished_since(store, now, settings.retention_resumable_days),
        stream_maxlen=settings.retention_stream_maxlen,
        cache_max_entries=settings.retention_cache_max_entries,
    )


def unfinished_since(store: MetadataStore, now: dt.datetime, resumable_days: float) -> dt.datetime | None:
    """Cache entries last used at or after this moment may be needed: one USE_RESOLUTION before the
    creation of the oldest live run, or failed or cancelled run that ended within resumable_days
    (0: whenever). A run's hits mark their entries used no earlier than that, its own calls are
    stored after it, and a resumed run keeps its first creation time."""
    runs = runs_table
    resumable: sa.ColumnElement[bool] = runs.c.status.in_(("failed", "cancelled"))
    if resumable_days > 0:
        resumable = sa.and_(resumable, runs.c.finished_at >= now - dt.timedelta(days=resumable_days))
    with store.engine.connect() as conn:
        oldest = conn.execute(
            sa.select(sa.func.min(runs.c.created_at)).where(sa.or_(runs.c.status.in_(LIVE_STATUSES), resumable))
        ).scalar()
    if oldest is None:
        return None
    oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=dt.timezone.utc)
    return cast(dt.datetime, oldest) - USE_RESOLUTION


def _iso(moment: dt.datetime) -> str:
    """As events and dead letters store their time (events._now): ISO 8601 in UTC."""
    return moment.astimezone(dt.timezone.utc).isoformat()


# the event bus -------------------------------------------------------------------------------
def _prune_bus(bus: EventBus, store: MetadataStore, cut: Cutoffs, dry: bool, report: GcReport,
               now: dt.datetime) -> None:
    if isinstance(bus, RedisEventBus):
        _prune_redis_bus(bus, store, cut, dry, report, now)
    elif isinstance(bus, DatabaseEventBus):
        _prune_database_bus(bus, cut, dry, report)


def _prune_database_bus(bus: DatabaseEventBus, cut: Cutoffs, dry: bool, report: GcReport) -> None:
    engine = bus.engine
    if cut.events is not None:
        ended = sa.select(runs_table.c.id).where(runs_table.c.status.in_(FINAL_STATUSES),
                                                 runs_table.c.finished_at < cut.events)
        due = [events_table.c.run_id.in_(ended), events_table.c.at < _iso(cut.events)]
        floor, holder = _database_read_floor(engine)
        if floor is not None:
            held = _count(engine, events_table, [*due, events_table.c.id > floor])
            if held:
                report.held.append(f"{held} event(s) of ended runs kept: consumer group {holder!r} has not read them")
            due.append(events_table.c.id <= floor)
        report.removed["events"] += _delete(engine, events_table, events_table.c.id, due, dry)
    if cut.dead_letters is not None:
        table = event_dead_letters_table
        report.removed["dead_letters"] += _delete(engine, table, table.c.id, [table.c.at < _iso(cut.dead_letters)],
                                                  dry)


def _database_read_floor(engine: sa.Engine) -> tuple[int | None, str | None]:
    """The last event id that every consumer group has been handed and acked (None: no group),
    and the group that holds it there."""
    groups, pending = event_groups_table, event_pending_table
    with engine.connect() as conn:
        behind = conn.execute(sa.select(groups.c.name, groups.c.delivered)
                              .order_by(groups.c.delivered).limit(1)).first()
        unacked = conn.execute(sa.select(pending.c.group, pending.c.event_id)
                               .order_by(pending.c.event_id).limit(1)).first()
    candidates = []
    if behind is not None:
        candidates.append((int(behind[1]), str(behind[0])))
    if unacked is not None:
        candidates.append((int(unacked[1]) - 1, str(unacked[0])))
    if not candidates:
        return None, None
    return min(candidates)


# Redis: a run's stream and counter go together, and only if its newest event is older than the
# cutoff (ARGV[1]): a run resumed meanwhile has published since, and keeps them.
_DROP_RUN_STREAM = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 then return 0 end
local fields, at = last[1][2], nil
for i = 1, #fields, 2 do if fields[i] == 'at' then at = fields[i + 1] end end
if at == nil or at >= ARGV[1] then return 0 end
local n = redis.call('XLEN', KEYS[1])
if ARGV[2] ~= 'dry' then redis.call('DEL', KEYS[1], KEYS[2]) end
return n
"""


def _prune_redis_bus(bus: RedisEventBus, store: MetadataStore, cut: Cutoffs, dry: bool, report: GcReport,
                     now: dt.datetime) -> None:
    client, prefix = bus.client, bus.PREFIX
    if cut.events is not None:
        drop = client.register_script(_DROP_RUN_STREAM)
        run_prefix = f"{prefix}:run:"
        for keys in _chunks(client.scan_iter(match=f"{run_prefix}*", count=CHUNK, _type="stream")):
            ids = [key.removeprefix(run_prefix) for key in keys]
            # Only runs this store knows ended: a stream of another store's run (a Redis shared by
            # several stores) is that store's to prune.
            for run_id in _ended_before(store, ids, cut.events):
                report.removed["events"] += int(drop(keys=[f"{run_prefix}{run_id}", f"{prefix}:seq:{run_id}"],
                                                     args=[_iso(cut.events), "dry" if dry else "go"]))
    _trim_cluster_stream(client, prefix, cut, dry, report)
    if cut.dead_letters is not None:
        for key in client.scan_iter(match=f"{prefix}:dead:*", count=CHUNK, _type="stream"):
            removed, last = _walk(client, key, _stream_id(cut.dead_letters), None)
            if removed and not dry:
                client.xtrim(key, minid=_next_id(cast(str, last)), approximate=False)
            report.removed["dead_letters"] += removed


def _ended_before(store: MetadataStore, run_ids: list[str], cutoff: dt.datetime) -> list[str]:
    runs = runs_table
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(runs.c.id).where(
            runs.c.id.in_(run_ids), runs.c.status.in_(FINAL_STATUSES), runs.c.finished_at < cutoff)).scalars())


def _trim_cluster_stream(client: redis.Redis, key: str, cut: Cutoffs, dry: bool, report: GcReport) -> None:
    """MINID-trim the cluster-wide stream: entries older than the events' cutoff, then the oldest
    past stream_maxlen; both stop at the oldest entry a consumer group has not read and acked."""
    if not client.exists(key):
        return
    floor, holder = _redis_read_floor(client, key)
    removed, last = 0, None
    if cut.events is not None:
        removed, last = _walk(client, key, _min_id(_stream_id(cut.events), floor), None)
    excess = int(client.xlen(key)) - cut.stream_maxlen if cut.stream_maxlen else 0
    if excess > removed:
        more, after = _walk(client, key, floor, excess - removed, start=f"({last}" if last else "-")
        removed, last = removed + more, after or last
    if floor is not None and (excess > removed or (cut.events is not None
                                                   and _id_key(floor) < _id_key(_stream_id(cut.events)))):
        report.held.append(f"cluster stream {key}: entries from {floor} on kept: consumer group {holder!r}"
                           " has not read and acked them")
    if removed and not dry:
        client.xtrim(key, minid=_next_id(cast(str, last)), approximate=False)
    report.removed["stream"] += removed


def _redis_read_floor(client: redis.Redis, key: str) -> tuple[str | None, str | None]:
    """The oldest entry id some consumer group still needs (its oldest unacked one, else the one
    after the last it was handed), and that group; (None, None) when the stream has no group."""
    floor: str | None = None
    holder: str | None = None
    for group in client.xinfo_groups(key):
        name = str(group["name"])
        if int(group.get("pending") or 0):
            needed = str(client.xpending(key, name)["min"])
        else:
            needed = _next_id(str(group["last-delivered-id"]))
        if floor is None or _id_key(needed) < _id_key(floor):
            floor, holder = needed, name
    return floor, holder


def _walk(client: redis.Redis, key: str, end: str | None, want: int | None,
          start: str = "-") -> tuple[int, str | None]:
    """Count the entries from `start` up to `end` (exclusive; None: the end), at most `want`;
    returns the count and the last id counted. Reads pages of CHUNK: work grows with what is due."""
    count, last = 0, None
    while want is None or count < want:
        page = CHUNK if want is None else min(CHUNK, want - count)
        entries = cast(list[tuple[str, Any]], client.xrange(key, min=start, max=f"({end}" if end else "+", count=page))
        if not entries:
            break
        count, last = count + len(entries), str(entries[-1][0])
        start = f"({last}"
        if len(entries) < page:
            break
    return count, last


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _next_id(entry_id: str) -> str:
    ms, seq = _id_key(entry_id)
    return f"{ms}-{seq + 1}"


def _min_id(a: str, b: str | None) -> str:
    return a if b is None or _id_key(a) <= _id_key(b) else b


def _stream_id(moment: dt.datetime) -> str:
    """The first id of that millisecond: entries with smaller ids were added before it."""
    return f"{int(moment.timestamp() * 1000)}-0"


# the result cache ----------------------------------------------------------------------------
def _prune_cache(cache: ResultCache, cut: Cutoffs, dry: bool, report: GcReport, now: dt.datetime) -> None:
    if cut.cache is None and not cut.cache_max_entries:
        return
    if isinstance(cache, DatabaseCache):
        _prune_database_cache(cache.engine, cut, dry, report)
    elif isinstance(cache, RedisCache):
        _prune_redis_cache(cache, cut, dry, report, now)
    if cut.protected_since is not None:
        report.held.append(f"cache entries used since {cut.protected_since:%Y-%m-%d %H:%M} UTC kept: a live or"
                           " resumable run may need them")


def _prune_database_cache(engine: sa.Engine, cut: Cutoffs, dry: bool, report: GcReport) -> None:
    table = cache_table
    last_use = sa.func.coalesce(table.c.used_at, table.c.created_at)
    needed = [] if cut.protected_since is None else [last_use < cut.protected_since]
    removed = 0
    if cut.cache is not None:
        removed = _delete(engine, table, table.c.key, [last_use < cut.cache, *needed], dry)
    if cut.cache_max_entries:
        # (dry: the entries the age pass would remove are still there, hence the offsets)
        excess = _count(engine, table, []) - (removed if dry else 0) - cut.cache_max_entries
        while excess > 0:
            with engine.connect() as conn:
                keys = conn.execute(sa.select(table.c.key).where(*needed).order_by(last_use, table.c.key)
                                    .offset(removed if dry else 0).limit(min(CHUNK, excess))).scalars().all()
            if not keys:
                break
            if not dry:
                with engine.begin() as conn:
                    conn.execute(table.delete().where(table.c.key.in_(keys)))
            removed, excess = removed + len(keys), excess - len(keys)
    report.removed["cache"] += removed


# Redis: delete a key only if it is still unused for as long as it was when it was picked.
_DROP_IDLE = """
local n = 0
for i, key in ipairs(KEYS) do
  local idle = redis.call('OBJECT', 'IDLETIME', key)
  if idle and idle >= tonumber(ARGV[i]) then redis.call('UNLINK', key); n = n + 1 end
end
return n
"""


def _prune_redis_cache(cache: RedisCache, cut: Cutoffs, dry: bool, report: GcReport, now: dt.datetime) -> None:
    """How long each entry went unused comes from Redis's own clock (OBJECT IDLETIME, reset by
    every lookup). That clock wraps after about 194 days: an entry idle longer looks younger (by
    194 days) and goes at a later pass. With an LFU maxmemory-policy Redis keeps no idle time, and
    this kind fails with Redis's reason."""
    client = cache.client
    idle: list[tuple[int, bytes]] = []  # (seconds unused, key)
    for keys in _chunks(client.scan_iter(match=f"{cache.PREFIX}*", count=CHUNK)):
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.object("idletime", key)
        idle += [(int(seconds), key) for key, seconds in zip(keys, pipe.execute()) if seconds is not None]
    protect = None if cut.protected_since is None else (now - cut.protected_since).total_seconds()
    candidates = sorted((i for i in idle if protect is None or i[0] > protect), reverse=True)  # most idle first
    due = [] if cut.cache is None else [c for c in candidates if c[0] > (now - cut.cache).total_seconds()]
    if cut.cache_max_entries:
        due = candidates[:max(len(due), len(idle) - cut.cache_max_entries)]
    if dry:
        report.removed["cache"] += len(due)
        return
    drop = client.register_script(_DROP_IDLE)
    for i in range(0, len(due), CHUNK):
        chunk = due[i:i + CHUNK]
        report.removed["cache"] += int(drop(keys=[k for _, k in chunk], args=[s for s, _ in chunk]))


# the audit log -------------------------------------------------------------------------------
def _prune_audit(store: MetadataStore, cut: Cutoffs, dry: bool, report: GcReport) -> None:
    if cut.audit is not None:
        report.removed["audit"] += _delete(store.engine, audit_table, audit_table.c.id, [audit_table.c.at < cut.audit],
                                           dry)


# shared --------------------------------------------------------------------------------------
def _count(engine: sa.Engine, table: sa.Table, where: list[Any]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())


def _delete(engine: sa.Engine, table: sa.Table, key: sa.Column[Any], where: list[Any], dry: bool) -> int:
    """Delete the rows matching `where`, CHUNK at a time (short statements, short locks); dry: count them."""
    if dry:
        return _count(engine, table, where)
    removed = 0
    while True:
        with engine.begin() as conn:
            keys = conn.execute(sa.select(key).where(*where).limit(CHUNK)).scalars().all()
            if keys:
                conn.execute(table.delete().where(key.in_(keys), *where))
        removed += len(keys)
        if len(keys) < CHUNK:
            return removed


def _chunks(keys: Iterator[Any]) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for key in keys:
        chunk.append(key)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
