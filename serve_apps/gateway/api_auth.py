"""The API's side of the gateway: `requires(role)` on every router, and the refusals it answers.

A caller is an API key (`Authorization: Bearer aug_...`) or a login session (the shell's cookie).
A session's state-changing requests must carry its CSRF token in `X-CSRF-Token`: a page of another
site can make the browser send the cookie, but cannot read the token. Keys are not sent by
browsers on their own, so they need none.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from augment_core.audit import record
from augment_core.identity import Principal, Role
from augment_core.store import open_store
from serve_apps.gateway.gate import COOKIE, CSRF_HEADER, QUOTA_RETRY_SECONDS, SAFE_METHODS, Gate, QuotaUnavailable
from serve_apps.gateway.spend import SpendCapReached

bearer = HTTPBearer(auto_error=False, scheme_name="apiKey",
                    description="An API key: `augment keys create USER NAME` prints one, once.")
session_cookie = APIKeyCookie(name=COOKIE, auto_error=False, scheme_name="session",
                              description="A login session from the shell's /login page; state-changing "
                                          f"requests must also send its CSRF token in {CSRF_HEADER}.")

log = logging.getLogger(__name__)


class Refusal(Exception):
    """An answer of the gateway: 401, 403 or 429 with a JSON body saying why."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None, **extra: object) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers, self.extra = status, detail, headers or {}, extra


def get_gate(request: Request) -> Gate:
    return request.app.state.gate


def requires(role: Role) -> Callable[..., Awaitable[Principal]]:
    """The dependency that lets only callers of `role` (or above) through, within their rate.

    async, so that a known caller within its rate costs no hop to FastAPI's thread pool: what needs
    the store or the shared quotas (a key not checked lately, a rate not booked ahead, an audit
    entry) goes there, the rest runs on the event loop."""

    async def caller(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        session: Annotated[str | None, Security(session_cookie)],
    ) -> Principal:
        gate = get_gate(request)
        principal = known_caller(gate, credentials, session)
        if principal is None:
            principal = await run_in_threadpool(authenticate, gate, credentials, session)
        # The rate first: refused requests count too, so a caller looping on a refusal cannot flood
        # the audit log (each refusal of a change is written there) or the store behind it.
        per_minute = principal.rate_per_minute or gate.settings.api_rate_per_minute
        if gate.admit_local(principal.quota_id):
            if gate.running_low(principal.quota_id):
                request.app.state.rate_refills.book_ahead(gate, principal.quota_id, per_minute)
        else:
            wait = await request.app.state.rate_refills.admit(gate, principal.quota_id, per_minute)
            if wait > 0:
                raise Refusal(429, f"rate limit of {per_minute} requests/minute reached; retry in {wait:.1f}s",
                              headers={"Retry-After": str(max(1, math.ceil(wait)))})
        if not principal.role.allows(role):
            reason = f"this needs the {role.value} role (or above); {principal.user} is {principal.role.value}"
            await run_in_threadpool(audit_denied, gate, request, principal, reason)
            raise Refusal(403, reason, needed_role=role.value, role=principal.role.value)
        if principal.via == "session" and request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            # bytes: a non-ASCII header value is a mismatch, not a TypeError (500)
            if not (principal.csrf_token and hmac.compare_digest(sent.encode(), principal.csrf_token.encode())):
                await run_in_threadpool(audit_denied, gate, request, principal, f"no valid {CSRF_HEADER}")
                raise Refusal(403, f"a request with the session cookie must carry the session's {CSRF_HEADER}"
                                   " header (GET /session of the shell gives it)")
        request.state.principal = principal
        return principal

    return caller


class RateRefills:
    """One round trip at a time per caller to book its rate (`Gate.admit` or `Gate.book_ahead`, in
    the thread pool).

    A caller's requests that find this replica's booked share used up while a round trip for it is
    on its way wait for that one, then take from what it booked: without it, every such request
    went to the pool and the store on its own, and once a replica fell behind, its queued requests
    did so all at once, each hop slower for the tasks waiting (docs/benchmarks.md, part 8)."""

    def __init__(self) -> None:
        self._asking: dict[str, asyncio.Future[float]] = {}

    async def admit(self, gate: Gate, who: str, per_minute: int) -> float:
        """0 to go, else the seconds to wait (as Gate.admit); QuotaUnavailable as Gate.admit."""
        while True:
            asking = self._asking.get(who)
            if asking is None or asking.done():
                asking = asyncio.ensure_future(run_in_threadpool(gate.admit, who, per_minute, gate.settings.api_burst))
                self._asking[who] = asking
                asking.add_done_callback(lambda done: self._forget(who, done))
                # shielded: a caller who hangs up does not cancel the booking the others wait for
                return await asyncio.shield(asking)  # the asker takes the first request it booked
            wait = await asyncio.shield(asking)
            if wait > 0:
                return wait  # the rate is used up for now: every request waiting on it is refused alike
            if gate.admit_local(who):
                return 0.0

    def book_ahead(self, gate: Gate, who: str, per_minute: int) -> None:
        """Book the caller's next share in the background, unless a round trip for it is on its way:
        the requests go on with what is left, and those that find it used up wait for this one as
        for any (`admit`). Its failure is the gate's warning; the next `admit` asks again."""
        asking = self._asking.get(who)
        if asking is not None and not asking.done():
            return
        asking = asyncio.ensure_future(run_in_threadpool(gate.book_ahead, who, per_minute, gate.settings.api_burst))
        self._asking[who] = asking
        asking.add_done_callback(lambda done: self._forget(who, done))

    def _forget(self, who: str, done: asyncio.Future[float]) -> None:
        if not done.cancelled():
            done.exception()  # retrieved: a failed booking nobody waited on is not an asyncio error
        if self._asking.get(who) is done:
            del self._asking[who]


def known_caller(gate: Gate, credentials: HTTPAuthorizationCredentials | None,
                 session: str | None) -> Principal | None:
    """The caller's principal when this replica checked its key or session lately (as authenticate
    would answer it); None when authenticate must ask the store or refuse."""
    if credentials is not None:
        if credentials.scheme.lower() != "bearer":
            return None
        fresh, principal = gate.known_key(credentials.credentials)
    elif session:
        fresh, principal = gate.known_session(session)
    else:
        return None
    return principal if fresh else None


def audit_denied(gate: Gate, request: Request, principal: Principal, reason: str) -> None:
    """A known caller refused a change (by role or CSRF) is audited; refused reads are not (they change
    nothing, and would flood the log)."""
    if request.method in SAFE_METHODS:
        return
    try:
        record(open_store(gate.settings), principal.label, "access.denied", f"{request.method} {request.url.path}",
               "refused", reason)
    except SQLAlchemyError as exc:  # the refusal stands (403), unwritten: a store outage is no 500
        log.warning("access.denied of %s not audited: %s", principal.label, type(exc).__name__)


def authenticate(gate: Gate, credentials: HTTPAuthorizationCredentials | None, session: str | None) -> Principal:
    """The key's principal (a key wins over a cookie), else the session's; Refusal 401 otherwise."""
    if credentials is not None:
        principal = gate.from_key(credentials.credentials) if credentials.scheme.lower() == "bearer" else None
        if principal is None:
            raise Refusal(401, "the API key is not valid: unknown, revoked or expired, or its user is disabled",
                          headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return principal
    if session:
        principal = gate.from_session(session)
        if principal is None:
            raise Refusal(401, "the login session has ended: sign in again", headers={"WWW-Authenticate": "Bearer"})
        return principal
    raise Refusal(401, "authentication required: send Authorization: Bearer <API key>, or sign in",
                  headers={"WWW-Authenticate": "Bearer"})


Viewer = Annotated[Principal, Depends(requires(Role.viewer))]
Operator = Annotated[Principal, Depends(requires(Role.operator))]
Admin = Annotated[Principal, Depends(requires(Role.admin))]


async def _refused(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refusal)
    return JSONResponse({"detail": exc.detail, **exc.extra}, status_code=exc.status, headers=exc.headers)


async def _quota_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(QUOTA_RETRY_SECONDS)})


async def _spend_cap_reached(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpendCapReached)
    return JSONResponse(
        {"detail": str(exc), "spent_usd": round(exc.spent, 6), "cap_usd": exc.cap,
         "resets_at": exc.resets_at.isoformat().replace("+00:00", "Z")},
        status_code=429, headers={"Retry-After": str(exc.retry_after)},
    )


def install_gateway(app: FastAPI, gate: Gate) -> None:
    app.state.gate = gate
    app.state.rate_refills = RateRefills()
    app.add_exception_handler(Refusal, _refused)
    app.add_exception_handler(QuotaUnavailable, _quota_unavailable)
    app.add_exception_handler(SpendCapReached, _spend_cap_reached)
