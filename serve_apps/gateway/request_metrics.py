"""`MeterRequests`: the API's request metrics (augment_core/metric_catalog.py) by route template,
method, status and caller: a key's public prefix (as the admin panel and the audit log name it,
never the secret), 'session' or 'anonymous'. Routes are templates (/v1/runs/{run_id}), so the
labels stay few whatever the paths; requests no route matched count as 'unmatched'."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelines import metrics
from serve_apps.gateway.request_spans import route_template


class MeterRequests:
    """Pure ASGI middleware: a streamed response is timed to its first byte, never buffered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app answers
        answered: float | None = None

        async def sending(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = int(message["status"]), time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = str(scope.get("method", "GET"))
            route = route_template(scope) or "unmatched"
            metrics.count("augment_api_requests", 1, route=route, method=method, status=str(status),
                          caller=caller_label(scope))
            metrics.observe("augment_api_request_seconds", (answered or time.perf_counter()) - started,
                            route=route, method=method)


def caller_label(scope: Scope) -> str:
    principal = (scope.get("state") or {}).get("principal")
    if principal is None:
        return "anonymous"
    return principal.key_prefix if principal.via == "key" and principal.key_prefix else "session"
