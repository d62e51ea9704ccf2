"""The browser's side of the gateway, as ASGI middleware of the shell and of every panel.

`HostCheck` refuses a Host header that is not configured (DNS rebinding: a page of another site
that resolves its own name to 127.0.0.1). `PageGuard` lets a request through only with a live
login session of a role the page allows: a browser without one is sent to the login page, anything
else gets 401. A state-changing request (Gradio's queue joins, uploads, cancels: any method but
GET, HEAD and OPTIONS) must come from our own origin *and* carry the session's CSRF token in
`X-CSRF-Token`; every panel's page sends it on its own requests (serve_apps/gateway/panels.py).
Panels take sessions only, never API keys: programs use the API. WebSockets are refused (no panel
uses one, and a browser's WebSocket cannot carry the token).
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from augment_core.identity import Principal, Role
from augment_core.settings import Settings
from serve_apps.gateway.gate import COOKIE, CSRF_HEADER, SAFE_METHODS, Gate, host_allowed, same_origin

LOGIN_PATH = "/login"


class HostCheck:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if not host_allowed(self.settings, host):
                response = JSONResponse(
                    {"detail": f"host {host!r} is not served here (AUGMENT_ALLOWED_HOSTS)"}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def principal_of(request: Request) -> Principal | None:
    """What PageGuard found; Gradio's auth_dependency answers its user name from it."""
    return getattr(request.state, "principal", None)


def gradio_user(request: Request) -> str | None:
    """The `auth_dependency` of every Gradio panel: the signed-in user, or None (Gradio says 401)."""
    principal = principal_of(request)
    return principal.user if principal is not None else None


class PageGuard:
    """Only callers with a session of `role` (or above) reach `app`; `public` paths (below the
    application's root) are open, for the login page itself."""

    def __init__(self, app: ASGIApp, gate: Gate, prefix: str, role: Role, public: frozenset[str] = frozenset()) -> None:
        self.app, self.gate, self.role, self.public = app, gate, role, public
        self.login_url = prefix + LOGIN_PATH

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # before accept: the client sees 403
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = request.url.path
        root = scope.get("root_path") or ""
        relative = path[len(root):] if root and path.startswith(root) else path
        if relative.rstrip("/") in self.public:
            await self.app(scope, receive, send)
            return
        refusal = await self._check(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _check(self, request: Request) -> Response | None:
        token = request.cookies.get(COOKIE)
        # The store is a blocking call: off the event loop that serves every open stream.
        principal = await asyncio.to_thread(self.gate.from_session, token) if token else None
        if principal is None:
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"{self.login_url}?next={quote(target, safe='/')}", status_code=303)
            return JSONResponse({"detail": "sign in first", "login": self.login_url}, status_code=401)
        if not principal.role.allows(self.role):
            return refusal_page(403, f"This page needs the {self.role.value} role; {principal.user} is "
                                     f"{principal.role.value}.", request, needed_role=self.role.value)
        if request.method not in SAFE_METHODS:
            if not same_origin(request.headers):
                return refusal_page(403, "Cross-site request refused: this page only takes changes from its own site.",
                                    request)
            if not tokens_match(request.headers.get(CSRF_HEADER), principal.csrf_token):
                return refusal_page(403, f"A change needs the session's {CSRF_HEADER} header; reload the page.",
                                    request)
        request.scope.setdefault("state", {})["principal"] = principal
        return None


def tokens_match(sent: str | None, expected: str | None) -> bool:
    """A constant-time comparison that is False, not an error, for a missing or non-ASCII value."""
    return bool(sent and expected) and hmac.compare_digest((sent or "").encode(), (expected or "").encode())


def refusal_page(status: int, message: str, request: Request, **extra: str) -> Response:
    """HTML for a browser, JSON for anything else."""
    if "text/html" in request.headers.get("accept", ""):
        body = (f"<!doctype html><html lang=en><meta charset=utf-8><title>augment: refused</title>"
                f"<body style='font-family:system-ui;max-width:40rem;margin:3rem auto'>"
                f"<h1>Not allowed</h1><p role=alert>{html.escape(message)}</p></body></html>")
        return HTMLResponse(body, status_code=status)
    return Response(json.dumps({"detail": message, **extra}), status_code=status, media_type="application/json")
