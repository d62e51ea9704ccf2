"""The `shell` Serve application: the landing page at the top prefix, linking the panels the signed-in
user's role may open and the API; it also serves the one login page (serve_apps/gateway/login.py)."""

from __future__ import annotations

import html
import re
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve
from ray.serve import Application, Deployment

from augment_core.identity import Principal, Role
from augment_core.settings import Settings
from serve_apps.gateway.gate import Gate
from serve_apps.gateway.login import login_router
from serve_apps.gateway.pages import LOGIN_PATH, HostCheck, PageGuard, principal_of

ROUTE = r"^(/[A-Za-z0-9._~-]+)+$"
ROUTE_OR_EMPTY = r"^(/[A-Za-z0-9._~-]+)*$"


class PanelLink(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=60)
    path: str = Field(pattern=ROUTE, description="Route of the panel's application below the prefix.")
    role: Role = Field(default=Role.viewer, description="The least role that may open it.")


class ShellArgs(BaseModel):
    """Set by `serve_apps.deploy.load_config`: the prefix every application lives under."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(default="", description='"" or a route such as /augment.')
    panels: list[PanelLink] = Field(default_factory=list)
    api_path: str = Field(default="/api", pattern=ROUTE)

    @field_validator("prefix")
    @classmethod
    def _route_or_empty(cls, value: str) -> str:
        value = value.rstrip("/")  # then the same rule as every app's prefix
        if not re.match(ROUTE_OR_EMPTY, value):
            raise ValueError(f"prefix {value!r} must be empty or a route such as /augment")
        return value


def render_page(args: ShellArgs, principal: Principal) -> str:
    """The page: who is signed in, one link per panel their role may open, then the API's health
    and docs, all below the prefix."""
    def link(path: str, title: str) -> str:
        return f'<li><a href="{html.escape(args.prefix + path)}">{html.escape(title)}</a></li>'

    allowed = [p for p in args.panels if principal.role.allows(p.role)]
    panels = "\n".join(link(p.path + "/", p.title) for p in allowed) or "<li>no panels for your role</li>"
    api = "\n".join([
        link(f"{args.api_path}/v1/health", "API health"),
        link(f"{args.api_path}/docs", "API reference"),
    ])
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>augment</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}
li{{margin:.4rem 0}} header{{display:flex;justify-content:space-between;align-items:center}}
#user form{{display:inline;margin-left:.8rem}}</style></head>
<body>
<header><h1>augment</h1>
<div id="user">{html.escape(principal.user)} · {html.escape(principal.role.value)}
<form method="post" action="{html.escape(args.prefix)}/logout">
<input type="hidden" name="csrf_token" value="{html.escape(principal.csrf_token or "")}">
<button type="submit">Sign out</button></form></div></header>
<h2>Panels</h2>
<ul id="panels">
{panels}
</ul>
<h2>API</h2>
<ul id="api">
{api}
</ul>
</body>
</html>
"""


@serve.deployment(num_replicas=1, max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.05})
@serve.ingress()
class Shell:
    def __init__(self, args: ShellArgs) -> None:
        self.args = args
        self.settings = Settings()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_shell_app(self.args, self.settings)


def create_shell_app(args: ShellArgs, settings: Settings) -> FastAPI:
    gate = Gate(settings)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(login_router(gate, args.prefix))

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request) -> HTMLResponse:
        principal = principal_of(request)
        assert principal is not None  # PageGuard let only signed-in users through
        return HTMLResponse(render_page(args, principal), headers={"Cache-Control": "no-store"})

    # Outermost first: the Host check, then the session (the login page and its forms are open).
    app.add_middleware(PageGuard, gate=gate, prefix=args.prefix, role=Role.viewer,
                       public=frozenset({LOGIN_PATH, "/logout", "/session"}))
    app.add_middleware(HostCheck, settings=settings)
    return app


def build_app(args: dict[str, Any]) -> Application:
    # The decorators made the class a Deployment (mypy does not apply class decorators).
    return cast(Deployment, Shell).bind(ShellArgs.model_validate(args))
