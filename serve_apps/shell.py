"""The `shell` Serve application: the landing page at the top prefix, linking every panel and the API."""

from __future__ import annotations

import html
import re
from typing import Any, cast

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve
from ray.serve import Application, Deployment

ROUTE = r"^(/[A-Za-z0-9._~-]+)+$"


class PanelLink(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=60)
    path: str = Field(pattern=ROUTE, description="Route of the panel's application below the prefix.")


class ShellArgs(BaseModel):
    """Set by `serve_apps.deploy.load_config`: the prefix every application lives under."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(default="", description='"" or a route such as /augment.')
    panels: list[PanelLink] = Field(default_factory=list)
    api_path: str = Field(default="/api", pattern=ROUTE)

    @field_validator("prefix")
    @classmethod
    def _route_or_empty(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not re.match(ROUTE, value):
            raise ValueError(f"prefix {value!r} must be empty or a route such as /augment")
        return value


def render_page(args: ShellArgs) -> str:
    """The page: one link per panel, then the API's health and docs, all below the prefix."""
    def link(path: str, title: str) -> str:
        return f'<li><a href="{html.escape(args.prefix + path)}">{html.escape(title)}</a></li>'

    panels = "\n".join(link(p.path + "/", p.title) for p in args.panels) or "<li>no panels configured</li>"
    api = "\n".join([
        link(f"{args.api_path}/v1/health", "API health"),
        link(f"{args.api_path}/docs", "API reference"),
    ])
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>augment</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}
li{{margin:.4rem 0}}</style></head>
<body>
<h1>augment</h1>
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
        self.page = render_page(args)

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        @app.get("/", response_class=HTMLResponse)
        def page() -> str:
            return self.page

        return app


def build_app(args: dict[str, Any]) -> Application:
    # The decorators made the class a Deployment (mypy does not apply class decorators).
    return cast(Deployment, Shell).bind(ShellArgs.model_validate(args))
