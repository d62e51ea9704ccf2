"""store.durably: a write that must not be lost waits out an unreachable database, and only that."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

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
