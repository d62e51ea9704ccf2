"""The one login page under the route prefix (served by the shell), logout, and the session's facts.

The session cookie is `HttpOnly`, `SameSite=Lax`, `Secure` behind https, and scoped to the prefix,
so the shell, the API and every panel application below it share one login, and a logout ends it
for all of them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from augment_core.audit import record
from augment_core.store import open_store
from serve_apps.gateway.gate import COOKIE, QUOTA_RETRY_SECONDS, Gate, QuotaUnavailable, same_origin
from serve_apps.gateway.pages import LOGIN_PATH, tokens_match

LOGIN_RATE_PER_MINUTE, LOGIN_BURST = 10, 5  # per user name: guessing passwords takes forever


def safe_next(prefix: str, target: str | None) -> str:
    """Where to go after signing in: a path of ours, never another site ('//evil', 'https://...')."""
    home = prefix + "/"
    if not target or not target.startswith(home.rstrip("/") or "/") or target.startswith("//") or "\\" in target:
        return home
    return target


def login_page(prefix: str, next_url: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    alert = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>augment: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0}}
main{{max-width:22rem;margin:6rem auto;background:#fff;padding:2rem;border-radius:8px;
box-shadow:0 1px 4px rgba(0,0,0,.12)}}
h1{{margin:0 0 1.2rem;font-size:1.5rem}} label{{display:block;margin:.8rem 0 .3rem;font-weight:600}}
input{{width:100%;box-sizing:border-box;padding:.55rem;border:1px solid #bbb;border-radius:4px;font-size:1rem}}
button{{margin-top:1.3rem;width:100%;padding:.6rem;border:0;border-radius:4px;background:#2457d6;color:#fff;
font-size:1rem;cursor:pointer}}
.error{{background:#fdecea;color:#8a1c12;border:1px solid #f5c2bd;padding:.6rem;border-radius:4px}}
</style></head>
<body><main>
<h1>Sign in to augment</h1>
{alert}
<form method="post" action="{html.escape(prefix + LOGIN_PATH)}">
<input type="hidden" name="next" value="{html.escape(next_url)}">
<label for="username">User</label><input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>
</main></body></html>
"""
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def login_router(gate: Gate, prefix: str) -> APIRouter:
    router = APIRouter()
    cookie_path = prefix or "/"
    store = lambda: open_store(gate.settings)  # noqa: E731 - opened on first use, like the API's

    @router.get(LOGIN_PATH, response_class=HTMLResponse)
    def show(next: str | None = None) -> HTMLResponse:
        return login_page(prefix, safe_next(prefix, next))

    @router.post(LOGIN_PATH)
    async def sign_in(request: Request, username: Annotated[str, Form(max_length=100)],
                      password: Annotated[str, Form(max_length=1000)],
                      next: Annotated[str | None, Form(max_length=2000)] = None) -> Response:
        target = safe_next(prefix, next)
        if not same_origin(request.headers):  # login CSRF: a foreign page signing the browser in as someone else
            return login_page(prefix, target, "Sign-in refused: the form came from another site.", 403)
        try:
            wait = await asyncio.to_thread(gate.admit, f"login:{username}", LOGIN_RATE_PER_MINUTE, LOGIN_BURST)
        except QuotaUnavailable:  # attempts that cannot be counted are not let through
            page = login_page(prefix, target, "Sign-in is unavailable for a moment: try again shortly.", 503)
            page.headers["Retry-After"] = str(QUOTA_RETRY_SECONDS)
            return page
        if wait > 0:
            return login_page(prefix, target, f"Too many attempts for {username}: wait {wait:.0f} s.", 429)
        identity = gate.identity()
        user = await asyncio.to_thread(identity.verify_password, username, password)
        if user is None:
            await asyncio.to_thread(record, store(), f"{username} (login)", "login", username, "refused",
                                    "wrong user name or password, or the user is disabled")
            return login_page(prefix, target, "Wrong user name or password.", 401)
        lifetime = dt.timedelta(hours=gate.settings.session_hours)
        token, _ = await asyncio.to_thread(identity.create_session, user.name, lifetime)
        await asyncio.to_thread(record, store(), f"{user.name} (session)", "login", user.name)
        response = RedirectResponse(target, status_code=303)
        secure = gate.settings.cookie_secure
        if secure is None:
            secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
        response.set_cookie(COOKIE, token, max_age=int(lifetime.total_seconds()), path=cookie_path,
                            httponly=True, samesite="lax", secure=secure)
        return response

    @router.post("/logout")
    async def sign_out(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
        token = request.cookies.get(COOKIE)
        principal = await asyncio.to_thread(gate.from_session, token) if token else None
        if principal is not None:
            if not tokens_match(csrf_token, principal.csrf_token):
                return JSONResponse({"detail": "logout needs the session's CSRF token"}, status_code=403)
            assert token is not None
            await asyncio.to_thread(gate.identity().end_session, token)
            gate.forget_session(token)
            await asyncio.to_thread(record, store(), principal.label, "logout", principal.user)
        response = RedirectResponse(prefix + LOGIN_PATH, status_code=303)
        response.delete_cookie(COOKIE, path=cookie_path, httponly=True, samesite="lax")
        return response

    @router.get("/session")
    async def session(request: Request) -> JSONResponse:
        """Who is signed in, and the CSRF token their API calls with the cookie must carry."""
        token = request.cookies.get(COOKIE)
        principal = await asyncio.to_thread(gate.from_session, token) if token else None
        if principal is None:
            return JSONResponse({"detail": "sign in first", "login": prefix + LOGIN_PATH}, status_code=401)
        return JSONResponse({"user": principal.user, "role": principal.role.value, "csrf_token": principal.csrf_token},
                            headers={"Cache-Control": "no-store"})

    return router
