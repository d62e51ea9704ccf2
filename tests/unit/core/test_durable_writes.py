"""store.durably: a write that must not be lost waits out an unreachable database, and only that."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from augment_core.settings import Settings
from augment_core.store import describe_db_error, durably, is_disconnect


def refused() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("UPDATE runs SET counts=%(counts)s", {"counts": "{...}"},
                                   ConnectionRefusedError("connection to server at \"127.0.0.1\" failed: refused"))


def test_a_write_is_retried_while_the_database_is_unreachable(caplog):
    calls: list[int] = []

    def write() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise refused()
        return "stored"

    caplog.set_level(logging.WARNING, logger="augment_core.store")
    assert durably(write, "final state of run r1", deadline_s=30) == "stored"
    assert len(calls) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all(m.startswith("final state of run r1: database unreachable") for m in messages)
    assert all("UPDATE" not in m and "counts" not in m for m in messages)  # no statement, no record data


def test_other_database_errors_are_not_retried():
    calls: list[int] = []

    def write() -> None:
        calls.append(1)
        raise sa.exc.IntegrityError("INSERT", {}, ValueError("duplicate key"))

    with pytest.raises(sa.exc.IntegrityError):
        durably(write, "catalog", deadline_s=30)
    assert len(calls) == 1


def test_the_last_error_propagates_at_the_deadline():
    def write() -> None:
        raise refused()

    with pytest.raises(sa.exc.OperationalError):
        durably(write, "catalog", deadline_s=0.1)


def test_disconnects_are_told_apart_and_described_without_the_statement():
    assert is_disconnect(refused())
    assert not is_disconnect(sa.exc.IntegrityError("INSERT", {}, ValueError("duplicate key")))
    assert describe_db_error(refused()) == 'ConnectionRefusedError: connection to server at "127.0.0.1" failed: refused'


def test_a_statement_cut_by_its_timeout_is_not_taken_for_an_outage():
    class Canceled(Exception):
        sqlstate = "57014"  # PostgreSQL's query_canceled (statement_timeout)

    assert not is_disconnect(sa.exc.OperationalError("SELECT", {}, Canceled("canceling statement due to timeout")))


# the durable-write window against the stale-run window ---------------------------------------------
def test_a_write_waiting_for_the_database_gives_up_before_its_run_could_be_reaped():
    default = Settings(database_url="sqlite:///:memory:")
    assert default.durable_write_window + 2 * default.heartbeat_seconds <= default.stale_after_seconds
    short = Settings(database_url="sqlite:///:memory:", heartbeat_seconds=1, stale_after_seconds=8)
    assert short.durable_write_window == 6
    long = Settings(database_url="sqlite:///:memory:", stale_after_seconds=3600)
    assert long.durable_write_window == 60  # a long stale window does not make final writes wait longer
    assert Settings(database_url="sqlite:///:memory:", durable_write_seconds=5).durable_write_window == 5


def test_a_durable_write_window_as_long_as_the_stale_window_is_refused():
    with pytest.raises(ValidationError, match=r"AUGMENT_DURABLE_WRITE_SECONDS \(25\) must be at most"
                                              r" AUGMENT_STALE_AFTER_SECONDS - 2 x AUGMENT_HEARTBEAT_SECONDS \(20\)"):
        Settings(database_url="sqlite:///:memory:", durable_write_seconds=25)


def test_a_stale_window_within_two_heartbeats_is_refused():
    with pytest.raises(ValidationError, match=r"AUGMENT_STALE_AFTER_SECONDS \(10\) must exceed two heartbeats"):
        Settings(database_url="sqlite:///:memory:", heartbeat_seconds=5, stale_after_seconds=10)
