"""`TraceRequests`: one OpenTelemetry span per HTTP request of the API (augment_core/tracing.py).

The span continues the caller's trace when the request carries W3C `traceparent`/`tracestate`
headers, and is the current span while the route runs: an online augment call's engine, step
and provider-call spans are its children. Named `METHOD /route/{template}`, with the method,
route, status and no header, query or body (keys, cookies and records stay out of traces).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from augment_core.tracing import context_from_headers, enabled, fail, tracer

_PROPAGATED = (b"traceparent", b"tracestate")


class TraceRequests:
    """Pure ASGI middleware (it never buffers a streamed response). Free when tracing is off."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not enabled():
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", []) if k in _PROPAGATED}
        method = scope.get("method", "GET")
        status = 500  # unless the app answers

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        attributes: dict[str, Any] = {"http.request.method": method, "url.path": scope.get("path", "")}
        with tracer().start_as_current_span(method, context=context_from_headers(headers), kind=SpanKind.SERVER,
                                            attributes=attributes, record_exception=True) as span:
            try:
                await self.app(scope, receive, sending)
            finally:
                route = route_template(scope)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    fail(span, f"HTTP {status}")


def route_template(scope: Scope) -> str | None:
    """The matched route's template, e.g. /v1/workflows/{name}/augment, once routed. FastAPI 0.165
    keeps included routers nested: the route in the scope holds its path below its routers'
    prefixes, and the whole template is in its effective route context (a test pins it)."""
    effective = (scope.get("fastapi") or {}).get("effective_route_context")
    template = getattr(effective, "path_format", None) or getattr(scope.get("route"), "path", None)
    return template if isinstance(template, str) else None
