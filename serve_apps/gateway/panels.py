"""What every Gradio panel shares: `PanelApp`, the base of each panel's Serve deployment (its
manifest, which the shell discovers it by, and its page mounted inside the gateway with the
navigation bar of ui/nav.py), and the script that makes the page's own requests carry the
session's CSRF token.

PageGuard refuses a state-changing request to a panel (Gradio's queue joins, uploads, cancels) that
does not carry the session's token in `X-CSRF-Token`. Gradio cannot be told to send a header, so
the panel's page gets a script (Gradio's `head`, run before its first request) that wraps
`window.fetch`: a same-origin request other than GET, HEAD or OPTIONS waits for the token, fetched
once from the shell's `GET <prefix>/session`, and carries it. Requests to other sites never see it.
Gradio makes every request of the page through `fetch` (server-sent events through EventSource,
which only GETs).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import gradio as gr
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from augment_core.identity import Role
from augment_core.logs import configure_logging
from augment_core.settings import Settings
from serve_apps.gateway.assets import KeepAssets
from serve_apps.gateway.gate import CSRF_HEADER, SAFE_METHODS, Gate
from serve_apps.gateway.pages import HostCheck, PageGuard, gradio_user
from serve_apps.gateway.replica import NameReplica
from ui.nav import js_literal, nav_head

ROUTE = r"^(/[A-Za-z0-9._~-]+)+$"
ROUTE_OR_EMPTY = r"^(/[A-Za-z0-9._~-]+)*$"
VERSION = "0.1.0"  # the package's; a panel's deploy time (from Serve) tells redeploys apart

# Gradio runs a head's scripts twice (in the page's <head>, then again from its config): wrap once.
_SCRIPT = """<script>
(() => {
  if (window.augmentCsrf) return;
  window.augmentCsrf = true;
  const header = %(header)s, sessionUrl = %(session)s, safe = new Set(%(safe)s);
  const send = window.fetch.bind(window);
  let token = null;
  const csrfToken = () => (token = token || send(sessionUrl, {credentials: "same-origin", cache: "no-store",
      headers: {accept: "application/json"}})
    .then((r) => (r.ok ? r.json() : {})).then((body) => body.csrf_token || "").catch(() => "")
    .then((value) => { if (!value) token = null; return value; }));
  csrfToken();  // now, while Gradio's scripts load: the page's first events (queue joins) need it
  window.fetch = async (input, init) => {
    const request = input instanceof Request ? input : null;
    const method = String((init && init.method) || (request && request.method) || "GET").toUpperCase();
    const url = new URL(request ? request.url : String(input), window.location.href);
    if (safe.has(method) || url.origin !== window.location.origin) return send(input, init);
    const headers = new Headers((init && init.headers) || (request && request.headers) || undefined);
    const value = await csrfToken();
    if (value) headers.set(header, value);
    return send(input, {...init, headers});
  };
})();
</script>"""


def csrf_head(prefix: str) -> str:
    """The `<script>` for a panel's head; `prefix` is where the shell (and its /session) lives."""
    return _SCRIPT % {"header": js_literal(CSRF_HEADER), "session": js_literal(prefix + "/session"),
                      "safe": js_literal(sorted(SAFE_METHODS))}


def mount_panel(blocks: gr.Blocks, settings: Settings, prefix: str, role: Role = Role.viewer,
                **gradio_options: Any) -> FastAPI:
    """A panel's ASGI app: `blocks` on Gradio's FastAPI app with the CSRF script in its head, behind
    the Host check and the session guard (users of `role` and above). Call it inside the replica
    (Serve's `__serve_build_asgi_app__`) so that Gradio's lifespan starts the queue there."""
    head = csrf_head(prefix) + nav_head(prefix) + gradio_options.pop("head", "")
    # No "Use via API" link: a panel takes sessions only, so gradio_client with a key gets 401.
    gradio_options.setdefault("footer_links", ["gradio", "settings"])
    app = gr.mount_gradio_app(FastAPI(), blocks, path="/", auth_dependency=gradio_user, head=head, **gradio_options)
    calm_queue(blocks)
    app.add_middleware(KeepAssets)  # innermost: only what the guard let through is kept
    # Outermost first: the Host check, then the session and its CSRF token.
    app.add_middleware(PageGuard, gate=Gate(settings), prefix=prefix, role=role)
    app.add_middleware(HostCheck, settings=settings)
    return app


# How often an idle Gradio queue looks for work (seconds). Gradio polls every 1 ms on Linux (and for
# progress every 10 ms): about 5 % of a core per panel replica doing nothing, ten replicas half a core
# of a 2-core node (docs/benchmarks.md, "Speed round, part 3"). A queued event now waits at most
# 20 ms more to start; progress is sent every 100 ms (Gradio's own value on Windows).
QUEUE_POLL_SECONDS = 0.02
PROGRESS_POLL_SECONDS = 0.1


def calm_queue(blocks: gr.Blocks) -> None:
    """Make `blocks`' queue poll at QUEUE_POLL_SECONDS / PROGRESS_POLL_SECONDS when idle. Gradio has
    no option for it: these are attributes of its Queue (gradio/queueing.py), checked by a unit test
    so that an upgrade that renames them is noticed."""
    queue = blocks._queue
    queue.sleep_when_free = max(queue.sleep_when_free, QUEUE_POLL_SECONDS)
    queue.progress_update_sleep_when_free = max(queue.progress_update_sleep_when_free, PROGRESS_POLL_SECONDS)


class PanelArgs(BaseModel):
    """A panel application's args; `augment serve` sets both from configs/serve.yaml."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(default="", pattern=ROUTE_OR_EMPTY, description="Where the shell and the login page are.")
    route: str = Field(default="", pattern=ROUTE_OR_EMPTY,
                       description="This panel's route below the prefix; '' means /ui/<application name>.")
    title: str | None = Field(default=None, min_length=1, max_length=60,
                              description="Its name in the navigation, instead of the panel's own.")
    role: Role | None = Field(default=None, description="The least role that may open it, if above the panel's own.")


class PanelManifest(BaseModel):
    """What a panel application tells the shell about itself (`PanelApp.manifest`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The Serve application's name.")
    title: str = Field(min_length=1, max_length=60)
    path: str = Field(pattern=ROUTE, description="The panel's route below the prefix, e.g. /ui/runs.")
    role: Role = Field(description="The least role that may open it.")
    version: str
    health: str = Field(description='"ok", or why the panel cannot do its job right now.')
    replica: str = Field(description="The replica that answered.")
    views: dict[str, str] = Field(
        default_factory=dict,
        description='Named views the panel offers, as a query on its path: {"alerts": "?view=alerts"}.')


class PanelApp:
    """The base of every panel's deployment class: subclass it, set `title` (and `role`), write
    `blocks()` (a `ui/` module's builder fed with this class's read functions) and, where the panel
    reads something that can be down, `health()`. Decorate the subclass with `@serve.deployment`
    and `@serve.ingress()`; the Blocks are built inside the replica (`__serve_build_asgi_app__`), so
    that Gradio's lifespan starts its queue there."""

    title: ClassVar[str]
    role: ClassVar[Role] = Role.viewer
    views: ClassVar[dict[str, str]] = {}  # what the shell may link to (PanelManifest.views)
    head: ClassVar[str] = ""  # more for the page's <head> (styles, keyboard shortcuts)

    def __init__(self, args: PanelArgs) -> None:
        self.args = args
        self.settings = Settings()
        configure_logging(self.settings.log_format)
        self.shown_title = args.title or self.title
        # A deployment may close a panel to more roles, never open it to fewer.
        self.least_role = args.role if args.role is not None and args.role.allows(self.role) else self.role

    def blocks(self) -> gr.Blocks:
        raise NotImplementedError

    def health(self) -> str:
        """'ok', or a short reason; raising says the same with the exception's words."""
        return "ok"

    async def manifest(self) -> dict[str, Any]:
        """Called by the shell through a handle (no HTTP), so that a panel is found at run time."""
        context = serve.get_replica_context()
        try:
            health = await asyncio.to_thread(self.health)
        except Exception as exc:  # the reason goes to the shell, which shows the panel as unavailable
            health = f"{type(exc).__name__}: {exc}"
        return PanelManifest(
            name=context.app_name, title=self.shown_title, path=self.args.route or f"/ui/{context.app_name}",
            role=self.least_role, version=VERSION, health=health[:300], replica=context.replica_id.unique_id,
            views=self.views,
        ).model_dump(mode="json")

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = mount_panel(self.blocks(), self.settings, self.args.prefix, self.least_role, head=self.head)
        # Outermost: which replica answered (sessions stick to one; see cluster/local.py).
        app.add_middleware(NameReplica, replica=serve.get_replica_context().replica_id.unique_id)
        return app
