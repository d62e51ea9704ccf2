"""The result cache of provider calls, keyed by content: provider, model, params, the rendered
request and the output schema (the caller hashes them into the key). A re-run of an unchanged
workflow makes no provider call; editing one step's template re-calls only that step.

Durable: a table of the metadata store by default, Redis when AUGMENT_CACHE_BACKEND=redis.
The cache never fails a record: while its backend is unreachable (restarting), a lookup is a
miss and a store is a logged warning; the record keeps its value, a later run calls again.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import redis
import sqlalchemy as sa

from augment_core.settings import Settings
from augment_core.store import (
    add_missing_columns,
    aware,
    describe_db_error,
    insert_ignoring,
    is_disconnect,
    metadata,
    open_store,
    utcnow,
)

cache_table = sa.Table(
    "inference_cache",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # When a lookup last found it (to within USE_RESOLUTION); null: never since it was stored.
    # Retention (augment_core/retention.py) removes what went unused the longest.
    sa.Column("used_at", sa.DateTime(timezone=True)),
)

CHUNK = 500  # keys per query: bounded statements on both databases
# A hit writes used_at only when it is older than this: a hot key costs one write an hour, not one per hit.
USE_RESOLUTION = dt.timedelta(hours=1)
log = logging.getLogger(__name__)


def cache_key(*parts: Any) -> str:
    """sha256 of the parts as canonical JSON."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ResultCache(Protocol):
    def get_many(self, keys: list[str]) -> dict[str, Any]: ...

    def put_many(self, items: dict[str, Any]) -> None: ...


class NoCache:
    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return {}

    def put_many(self, items: dict[str, Any]) -> None:
        return None


class FailSoft:
    """What the durable backends share: an outage is a miss on get and a warning on put."""

    def _outage(self, exc: Exception) -> str | None:
        """Why the backend cannot be reached, when `exc` says so; None for any other error."""
        raise NotImplementedError

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        try:
            return self._get_many(keys)
        except Exception as exc:
            if (why := self._outage(exc)) is None:
                raise
            log.warning("result cache unreachable: %d lookups are misses (%s)", len(keys), why)
            return {}

    def put_many(self, items: dict[str, Any]) -> None:
        if not items:
            return
        try:
            self._put_many(items)
        except Exception as exc:
            if (why := self._outage(exc)) is None:
                raise
            log.warning("result cache unreachable: %d results not cached (%s)", len(items), why)

    def _get_many(self, keys: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def _put_many(self, items: dict[str, Any]) -> None:
        raise NotImplementedError


class DatabaseCache(FailSoft):
    """Rows of `inference_cache` in the metadata store; the first value stored for a key stays.

    Given a factory instead of an engine, it opens the store on first use: a worker that starts
    while the database restarts still runs its records (uncached)."""

    def __init__(self, engine: sa.Engine | Callable[[], sa.Engine]) -> None:
        self._open = (lambda: engine) if isinstance(engine, sa.Engine) else engine
        self._engine: sa.Engine | None = None
        self._lock = threading.Lock()
        if isinstance(engine, sa.Engine):
            self._ready()

    @property
    def engine(self) -> sa.Engine:
        return self._ready()

    def _ready(self) -> sa.Engine:
        with self._lock:
            if self._engine is None:
                engine = self._open()
                try:
                    cache_table.create(engine, checkfirst=True)
                except sa.exc.DBAPIError:  # another process created it at the same moment
                    cache_table.create(engine, checkfirst=True)
                add_missing_columns(engine, (cache_table,))
                self._engine = engine
            return self._engine

    def _outage(self, exc: Exception) -> str | None:
        return describe_db_error(exc) if isinstance(exc, sa.exc.DBAPIError) and is_disconnect(exc) else None

    def _get_many(self, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        now = utcnow()
        unmarked: list[str] = []  # hits whose used_at is older than USE_RESOLUTION
        last_use = sa.func.coalesce(cache_table.c.used_at, cache_table.c.created_at)
        with self.engine.connect() as conn:
            for i in range(0, len(unique), CHUNK):
                rows = conn.execute(
                    sa.select(cache_table.c.key, cache_table.c.value, last_use)
                    .where(cache_table.c.key.in_(unique[i:i + CHUNK]))
                )
                for key, value, used in rows:
                    found[key] = value
                    if (aware(used) or now) < now - USE_RESOLUTION:
                        unmarked.append(key)
        self._mark_used(unmarked, now)
        return found

    def _mark_used(self, keys: list[str], now: dt.datetime) -> None:
        """Note that these entries were used, for retention. A lookup never fails for it: an entry
        left unmarked only looks older to `augment gc` than it is."""
        if not keys:
            return
        try:
            with self.engine.begin() as conn:
                for i in range(0, len(keys), CHUNK):
                    conn.execute(cache_table.update().where(cache_table.c.key.in_(keys[i:i + CHUNK]))
                                 .values(used_at=now))
        except sa.exc.SQLAlchemyError as exc:
            log.warning("result cache: %d hits not marked as used (%s)", len(keys), describe_db_error(exc))

    def _put_many(self, items: dict[str, Any]) -> None:
        rows = [{"key": k, "value": v, "created_at": utcnow()} for k, v in items.items()]
        with self.engine.begin() as conn:
            for i in range(0, len(rows), CHUNK):
                conn.execute(insert_ignoring(self.engine, cache_table, ["key"]), rows[i:i + CHUNK])


class RedisCache(FailSoft):
    """JSON values under `augment:cache:<key>`, without expiry (the cache is a record of work);
    retention reads how long each went unused from Redis (OBJECT IDLETIME)."""

    PREFIX = "augment:cache:"

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)

    def _outage(self, exc: Exception) -> str | None:
        # BusyLoadingError (a restarted server still loading) is a ConnectionError.
        outage = isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError))
        return f"{type(exc).__name__}: {exc}" if outage else None

    def _get_many(self, keys: list[str]) -> dict[str, Any]:
        unique = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        for i in range(0, len(unique), CHUNK):
            chunk = unique[i:i + CHUNK]
            for key, value in zip(chunk, self.client.mget([self.PREFIX + k for k in chunk])):
                if value is not None:
                    found[key] = json.loads(value)
        return found

    def _put_many(self, items: dict[str, Any]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, value in items.items():
            pipe.set(self.PREFIX + key, json.dumps(value, ensure_ascii=False), nx=True)
        pipe.execute()


def open_cache(settings: Settings) -> ResultCache:
    return cache_for(settings.cache_backend, settings.database_url, settings.redis_url)


@functools.lru_cache(maxsize=8)
def cache_for(backend: str, database_url: str, redis_url: str | None) -> ResultCache:
    if backend == "off":
        return NoCache()
    if backend == "redis":
        assert redis_url, "checked by Settings"
        return RedisCache(redis_url)
    return DatabaseCache(lambda: open_store(Settings(database_url=database_url)).engine)
