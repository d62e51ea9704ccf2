"""The `shell` Serve application: the landing page at the top prefix and the navigation every page
carries (ui/nav.py), listing the panels found at run time among the cluster's Serve applications
(serve_apps/discovery.py) that the signed-in user's role may open; it also serves the one login
page (serve_apps/gateway/login.py)."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve
from ray.serve import Application, Deployment

from augment_core.alerts import Alert, AlertStore
from augment_core.identity import Principal, Role
from augment_core.logs import configure_logging
from augment_core.settings import Settings
from augment_core.store import open_store
from serve_apps.discovery import PanelDirectory, PanelEntry
from serve_apps.gateway.gate import Gate
from serve_apps.gateway.login import login_router
from serve_apps.gateway.pages import LOGIN_PATH, HostCheck, PageGuard, principal_of
from serve_apps.gateway.panels import ROUTE, ROUTE_OR_EMPTY
from ui.nav import nav_head


class ShellArgs(BaseModel):
    """Set by `serve_apps.deploy.load_config`: the prefix every application lives under."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(default="", description='"" or a route such as /augment.')
    api_path: str = Field(default="/api", pattern=ROUTE)

    @field_validator("prefix")
    @classmethod
    def _route_or_empty(cls, value: str) -> str:
        value = value.rstrip("/")  # then the same rule as every app's prefix
        if not re.match(ROUTE_OR_EMPTY, value):
            raise ValueError(f"prefix {value!r} must be empty or a route such as /augment")
        return value


def render_page(args: ShellArgs) -> str:
    """The page: the navigation bar and a card per panel (both drawn by ui/nav.py's script from
    /panels.json, so they follow panels coming and going), then the API's health and docs."""
    def link(path: str, title: str) -> str:
        return f'<li><a href="{html.escape(args.prefix + path)}">{html.escape(title)}</a></li>'

    api = "\n".join([
        link(f"{args.api_path}/v1/health", "API health"),
        link(f"{args.api_path}/docs", "API reference"),
    ])
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>augment</title>
<style>body{{font-family:system-ui,sans-serif;margin:0}} main{{max-width:48rem;margin:2rem auto;padding:0 1rem}}
li{{margin:.4rem 0}}</style>
{nav_head(args.prefix)}</head>
<body>
<main>
<h1>augment</h1>
<h2>Panels</h2>
<div id="panels"><p>Finding the panels…</p></div>
<h2>API</h2>
<ul id="api">
{api}
</ul>
</main>
</body>
</html>
"""


def panels_answer(principal: Principal, entries: list[PanelEntry], problem: str, prefix: str,
                  firing: list[Alert] | str) -> dict[str, Any]:
    """What /panels.json says to this user: who they are, the panels their role may open, and the
    alerts firing (`firing`: them, or why they could not be read), linked to the panel showing them."""
    mine = [e for e in entries if principal.role.allows(e.role)]
    where = next((url for e in mine if e.available and (url := e.view_url(prefix, "alerts"))), None)
    alerts: dict[str, Any] = {"url": where}
    if isinstance(firing, str):
        alerts["error"] = firing
    else:
        alerts.update(firing=len(firing), newest=firing[0].message if firing else None)
    return {
        "user": principal.user, "role": principal.role.value, "csrf_token": principal.csrf_token or "",
        "panels": [e.as_json(prefix) for e in mine], "problem": problem, "alerts": alerts,
    }


def firing_alerts(settings: Settings) -> list[Alert] | str:
    try:
        return AlertStore(open_store(settings)).firing()
    except Exception as exc:  # noqa: BLE001 - the bar says so; the panels still list
        return f"alerts cannot be read right now ({type(exc).__name__})"


@serve.deployment(num_replicas=1, max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.05})
@serve.ingress()
class Shell:
    def __init__(self, args: ShellArgs) -> None:
        self.args = args
        self.settings = Settings()
        configure_logging(self.settings.log_format)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_shell_app(self.args, self.settings, PanelDirectory(serve.get_replica_context().app_name))


def create_shell_app(args: ShellArgs, settings: Settings, directory: PanelDirectory | None = None) -> FastAPI:
    """`directory` finds the panels (by default among the Serve applications other than "shell")."""
    directory = directory or PanelDirectory("shell")
    gate = Gate(settings)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(login_router(gate, args.prefix))

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:  # PageGuard let only signed-in users through
        return HTMLResponse(render_page(args), headers={"Cache-Control": "no-store"})

    @app.get("/panels.json")
    async def panels(request: Request) -> JSONResponse:
        principal = principal_of(request)
        assert principal is not None
        entries, problem = await directory.panels()
        firing = await asyncio.to_thread(firing_alerts, settings)
        return JSONResponse(panels_answer(principal, entries, problem, args.prefix, firing),
                            headers={"Cache-Control": "no-store"})

    # Outermost first: the Host check, then the session (the login page and its forms are open).
    app.add_middleware(PageGuard, gate=gate, prefix=args.prefix, role=Role.viewer,
                       public=frozenset({LOGIN_PATH, "/logout", "/session"}))
    app.add_middleware(HostCheck, settings=settings)
    return app


def build_app(args: dict[str, Any]) -> Application:
    # The decorators made the class a Deployment (mypy does not apply class decorators).
    return cast(Deployment, Shell).bind(ShellArgs.model_validate(args))
