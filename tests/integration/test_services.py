"""The services the suite is pointed at answer, so nothing that needs them skips quietly in CI."""

from __future__ import annotations

import redis
import sqlalchemy as sa

from augment_core.store import engine_url


def test_postgresql_answers_queries(postgres_url):
    engine = sa.create_engine(engine_url(postgres_url))
    with engine.connect() as conn:
        assert conn.execute(sa.text("select 40 + 2")).scalar() == 42
    engine.dispose()


def test_redis_stores_and_returns_values(redis_url):
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=3)
    client.set("augment:test:ping", "pong", ex=30)
    assert client.get("augment:test:ping") == b"pong"
