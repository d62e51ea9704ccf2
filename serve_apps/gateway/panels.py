"""What every Gradio panel shares: its app mounted inside the gateway, and the script that makes the
page's own requests carry the session's CSRF token.

PageGuard refuses a state-changing request to a panel (Gradio's queue joins, uploads, cancels) that
does not carry the session's token in `X-CSRF-Token`. Gradio cannot be told to send a header, so
the panel's page gets a script (Gradio's `head`, run before its first request) that wraps
`window.fetch`: a same-origin request other than GET, HEAD or OPTIONS waits for the token, fetched
once from the shell's `GET <prefix>/session`, and carries it. Requests to other sites never see it.
Gradio makes every request of the page through `fetch` (server-sent events through EventSource,
which only GETs).
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
from fastapi import FastAPI

from augment_core.identity import Role
from augment_core.settings import Settings
from serve_apps.gateway.gate import CSRF_HEADER, SAFE_METHODS, Gate
from serve_apps.gateway.pages import HostCheck, PageGuard, gradio_user

_SCRIPT = """<script>
(() => {
  const header = %(header)s, sessionUrl = %(session)s, safe = new Set(%(safe)s);
  const send = window.fetch.bind(window);
  let token = null;
  const csrfToken = () => (token = token || send(sessionUrl, {credentials: "same-origin", cache: "no-store",
      headers: {accept: "application/json"}})
    .then((r) => (r.ok ? r.json() : {})).then((body) => body.csrf_token || "").catch(() => "")
    .then((value) => { if (!value) token = null; return value; }));
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


def _js(value: object) -> str:
    """A JSON literal that cannot end the script element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def csrf_head(prefix: str) -> str:
    """The `<script>` for a panel's head; `prefix` is where the shell (and its /session) lives."""
    return _SCRIPT % {"header": _js(CSRF_HEADER), "session": _js(prefix + "/session"),
                      "safe": _js(sorted(SAFE_METHODS))}


def mount_panel(blocks: gr.Blocks, settings: Settings, prefix: str, role: Role = Role.viewer,
                **gradio_options: Any) -> FastAPI:
    """A panel's ASGI app: `blocks` on Gradio's FastAPI app with the CSRF script in its head, behind
    the Host check and the session guard (users of `role` and above). Call it inside the replica
    (Serve's `__serve_build_asgi_app__`) so that Gradio's lifespan starts the queue there."""
    head = csrf_head(prefix) + gradio_options.pop("head", "")
    # No "Use via API" link: a panel takes sessions only, so gradio_client with a key gets 401.
    gradio_options.setdefault("footer_links", ["gradio", "settings"])
    app = gr.mount_gradio_app(FastAPI(), blocks, path="/", auth_dependency=gradio_user, head=head, **gradio_options)
    # Outermost first: the Host check, then the session and its CSRF token.
    app.add_middleware(PageGuard, gate=Gate(settings), prefix=prefix, role=role)
    app.add_middleware(HostCheck, settings=settings)
    return app
