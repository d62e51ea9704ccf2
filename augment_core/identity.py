"""Who may do what: users with one role each, their API keys and their login sessions.

Stored in the metadata store (tables in augment_core/store.py). Passwords are argon2id hashes;
API keys and session tokens are random secrets of 256 bits, stored as their SHA-256 only (a
leaked table opens nothing), shown once when created.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import re
import secrets
from typing import Literal

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel

from augment_core.store import (
    MetadataStore,
    api_keys_table,
    aware,
    sessions_table,
    users_table,
    utcnow,
)

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
MIN_PASSWORD = 8
KEY_START = "aug_"
SESSION_COOKIE = "augment_session"  # the login session's cookie, which the cluster's ingress also hashes
MAX_SECRET = 200  # longer than any key or session token we hand out: refused unhashed
MAX_DAILY_SPEND_USD = 1_000_000.0
# Last use is written at most this often per key, not on every request.
LAST_USED_EVERY = dt.timedelta(seconds=60)
_hasher = PasswordHasher()
# Verified against when the user does not exist, so a wrong name takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class Role(enum.StrEnum):
    viewer = "viewer"  # reads runs, datasets, reviews, workflows and events
    operator = "operator"  # also runs, cancels, resumes, reviews, augments online
    admin = "admin"  # also users, keys, providers and the audit log

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class IdentityError(ValueError):
    """A request about users or keys that cannot be done; the message says why."""


class User(BaseModel):
    name: str
    role: Role
    disabled: bool
    has_password: bool
    created_at: dt.datetime


class ApiKey(BaseModel):
    """A key as lists show it: never its secret."""

    prefix: str
    user: str
    name: str
    rate_per_minute: int | None
    daily_spend_usd: float | None = None  # null: the gateway's default
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= utcnow():
            return "expired"
        return "active"


class Principal(BaseModel):
    """Who is asking, and through what."""

    user: str
    role: Role
    via: Literal["key", "session"]  # the CLI, which needs neither, names itself with audit.local_actor
    key_prefix: str | None = None
    rate_per_minute: int | None = None  # the key's own limit, if it has one
    daily_spend_usd: float | None = None  # the key's own daily provider spend cap, if it has one
    csrf_token: str | None = None  # a session's token, which its state-changing requests must carry

    @property
    def label(self) -> str:
        """How the audit log names the caller: 'ana (key aug_1a2b3c4d)'."""
        how = f"key {self.key_prefix}" if self.via == "key" else self.via
        return f"{self.user} ({how})"

    @property
    def quota_id(self) -> str:
        """What rate limits, open streams and the daily spend count against: a key that an admin gave
        limits of its own, else the user, all of whose sessions and default keys share one count
        (a user who makes more keys gets no more rate or spend)."""
        own_limits = self.rate_per_minute is not None or self.daily_spend_usd is not None
        return f"key:{self.key_prefix}" if self.via == "key" and own_limits else f"user:{self.user}"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class Identity:
    """Queries on users, keys and sessions of one metadata store."""

    def __init__(self, store: MetadataStore) -> None:
        self.engine = store.engine

    # users ----------------------------------------------------------------------------------
    def has_users(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(users_table.c.name).limit(1)).first() is not None

    def create_user(self, name: str, role: Role, password: str | None) -> User:
        if not USER_NAME.match(name):
            raise IdentityError(f"user name {name!r}: use 1-100 letters, digits and . _ @ -, starting with a letter"
                                " or digit")
        row = {"name": name, "role": Role(role).value, "disabled": False, "created_at": utcnow(),
               "password_hash": _hash_password(password) if password is not None else None}
        try:
            with self.engine.begin() as conn:
                conn.execute(users_table.insert().values(**row))
        except sa.exc.IntegrityError:
            raise IdentityError(f"user {name!r} already exists") from None
        return self.get_user(name)

    def get_user(self, name: str) -> User:
        with self.engine.connect() as conn:
            row = conn.execute(users_table.select().where(users_table.c.name == name)).mappings().first()
        if row is None:
            raise IdentityError(f"no user {name!r}")
        return _user(row)

    def list_users(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(users_table.select().order_by(users_table.c.name)).mappings().all()
        return [_user(r) for r in rows]

    def set_role(self, name: str, role: Role) -> User:
        self._update_user(name, role=Role(role).value)
        return self.get_user(name)

    def set_password(self, name: str, password: str) -> User:
        self._update_user(name, password_hash=_hash_password(password))
        self._end_sessions_of(name)
        return self.get_user(name)

    def set_disabled(self, name: str, disabled: bool) -> User:
        """A disabled user's keys and sessions stop working at once (they are checked per request)."""
        self._update_user(name, disabled=disabled)
        if disabled:
            self._end_sessions_of(name)
        return self.get_user(name)

    def verify_password(self, name: str, password: str) -> User | None:
        """The user when the password is theirs and they are enabled; None otherwise, in the same time."""
        with self.engine.connect() as conn:
            row = conn.execute(users_table.select().where(users_table.c.name == name)).mappings().first()
        stored = row["password_hash"] if row is not None and row["password_hash"] else _DUMMY_HASH
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row["disabled"] or not row["password_hash"]:
            return None
        return _user(row)

    def _update_user(self, name: str, **values: object) -> None:
        with self.engine.begin() as conn:
            if conn.execute(users_table.update().where(users_table.c.name == name).values(**values)).rowcount == 0:
                raise IdentityError(f"no user {name!r}")

    # API keys -------------------------------------------------------------------------------
    def create_key(self, user: str, name: str, expires_at: dt.datetime | None = None,
                   rate_per_minute: int | None = None,
                   daily_spend_usd: float | None = None) -> tuple[ApiKey, str]:
        """A new key for `user`: its listing and its secret, which exists nowhere else afterwards."""
        owner = self.get_user(user)
        if owner.disabled:
            raise IdentityError(f"user {user!r} is disabled")
        if not 1 <= len(name) <= 100:
            raise IdentityError("a key's name must be 1-100 characters")
        if expires_at is not None and expires_at <= utcnow():
            raise IdentityError(f"expiry {expires_at.isoformat()} is in the past")
        if rate_per_minute is not None and rate_per_minute < 1:
            raise IdentityError("a key's rate must be at least 1 request per minute")
        if daily_spend_usd is not None and not 0 <= daily_spend_usd <= MAX_DAILY_SPEND_USD:
            raise IdentityError(f"a key's daily spend must be 0-{MAX_DAILY_SPEND_USD:g} USD")
        prefix = KEY_START + secrets.token_hex(4)
        secret = f"{prefix}_{secrets.token_urlsafe(32)}"
        with self.engine.begin() as conn:
            conn.execute(api_keys_table.insert().values(
                prefix=prefix, key_hash=digest(secret), user_name=user, name=name, created_at=utcnow(),
                expires_at=expires_at, rate_per_minute=rate_per_minute, daily_spend_usd=daily_spend_usd,
            ))
        return self.get_key(prefix), secret

    def get_key(self, prefix: str) -> ApiKey:
        with self.engine.connect() as conn:
            row = conn.execute(api_keys_table.select().where(api_keys_table.c.prefix == prefix)).mappings().first()
        if row is None:
            raise IdentityError(f"no key {prefix!r}")
        return _key(row)

    def list_keys(self, user: str | None = None) -> list[ApiKey]:
        query = api_keys_table.select().order_by(api_keys_table.c.created_at)
        if user:
            query = query.where(api_keys_table.c.user_name == user)
        with self.engine.connect() as conn:
            return [_key(r) for r in conn.execute(query).mappings().all()]

    def revoke_key(self, prefix: str) -> ApiKey:
        """Revoke a key by its prefix (shown in lists); revoking it again changes nothing."""
        self.get_key(prefix)  # IdentityError when there is no such key
        with self.engine.begin() as conn:
            conn.execute(
                api_keys_table.update().where(api_keys_table.c.prefix == prefix, api_keys_table.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return self.get_key(prefix)

    def resolve_key(self, secret: str) -> Principal | None:
        """The key's principal when it is active and its user enabled; None otherwise."""
        if not secret.startswith(KEY_START):
            return None
        keys = api_keys_table
        row = self._holder(keys, keys.c.key_hash, secret)
        if row is None or row["revoked_at"] is not None:
            return None
        now = utcnow()
        last = aware(row["last_used_at"])
        if last is None or now - last > LAST_USED_EVERY:
            with self.engine.begin() as conn:
                conn.execute(keys.update().where(keys.c.prefix == row["prefix"]).values(last_used_at=now))
        return Principal(user=row["user_name"], role=Role(row["role"]), via="key", key_prefix=row["prefix"],
                         rate_per_minute=row["rate_per_minute"], daily_spend_usd=row["daily_spend_usd"])

    # login sessions -------------------------------------------------------------------------
    def create_session(self, user: str, lifetime: dt.timedelta) -> tuple[str, Principal]:
        """A session for a signed-in user: the cookie's value (kept nowhere else) and its principal."""
        owner = self.get_user(user)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(sessions_table.delete().where(sessions_table.c.expires_at < now))  # tidy as we go
            conn.execute(sessions_table.insert().values(
                token_hash=digest(token), user_name=user, csrf_token=csrf, created_at=now, expires_at=now + lifetime,
            ))
        return token, Principal(user=user, role=owner.role, via="session", csrf_token=csrf)

    def resolve_session(self, token: str) -> Principal | None:
        row = self._holder(sessions_table, sessions_table.c.token_hash, token)
        if row is None:
            return None
        return Principal(user=row["user_name"], role=Role(row["role"]), via="session", csrf_token=row["csrf_token"])

    def _holder(self, table: sa.Table, hash_column: sa.Column[str], secret: str) -> sa.RowMapping | None:
        """The row of `table` whose hash is the secret's, with its user's role, when that user is
        enabled and the row has not expired: what keys and sessions check alike."""
        if not secret or len(secret) > MAX_SECRET:
            return None
        users = users_table
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(table, users.c.role, users.c.disabled)
                .join(users, users.c.name == table.c.user_name)
                .where(hash_column == digest(secret))
            ).mappings().first()
        if row is None or row["disabled"]:
            return None
        expires = aware(row["expires_at"])
        if expires is not None and expires <= utcnow():
            return None
        return row

    def end_session(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sessions_table.delete().where(sessions_table.c.token_hash == digest(token)))

    def _end_sessions_of(self, user: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sessions_table.delete().where(sessions_table.c.user_name == user))


def _hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise IdentityError(f"a password needs at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def _user(row: sa.RowMapping) -> User:
    return User(name=row["name"], role=Role(row["role"]), disabled=bool(row["disabled"]),
                has_password=bool(row["password_hash"]), created_at=aware(row["created_at"]))


def _key(row: sa.RowMapping) -> ApiKey:
    return ApiKey(prefix=row["prefix"], user=row["user_name"], name=row["name"],
                  rate_per_minute=row["rate_per_minute"], daily_spend_usd=row["daily_spend_usd"],
                  created_at=aware(row["created_at"]),
                  expires_at=aware(row["expires_at"]), last_used_at=aware(row["last_used_at"]),
                  revoked_at=aware(row["revoked_at"]))
