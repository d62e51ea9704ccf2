"""`KeepAssets`: Gradio's built front end is served under names that carry a hash of their content
(`/assets/Index-CdmNcLYG.js`), so a name never changes meaning. Gradio serves them with no cache
header, and a browser then asks again on every visit; with this one it keeps them for a year, and a
returning visit to any panel loads only the page and its data."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ASSETS = "/assets/"
KEEP = b"private, max-age=31536000, immutable"


class KeepAssets:
    """ASGI middleware: a 200 answer for a path under /assets/ (not Gradio's own API routes) may be
    kept by the browser for a year."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if ASSETS not in path or "/gradio_api/" in path:
            await self.app(scope, receive, send)
            return

        async def kept(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                message = {**message, "headers": [*headers, (b"cache-control", KEEP)]}
            await send(message)

        await self.app(scope, receive, kept)
