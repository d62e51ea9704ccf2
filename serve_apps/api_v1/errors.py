"""Error responses: bad input is a 422 with the path of every problem; an unreachable store a 503."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from augment_core.store import describe_db_error
from pipelines.io.json_records import beyond_json_limits
from pipelines.spec.errors import format_loc

log = logging.getLogger(__name__)


def validation_detail(errors: list[dict[str, Any]], json_body: bool) -> list[dict[str, Any]]:
    """FastAPI's error items without the offending input (it can be a thousand records) or ctx.

    `path` is the location as one string; a JSON syntax error is located by character offset.
    """
    detail = []
    for err in errors:
        loc = list(err.get("loc", ()))
        kind = err.get("type", "")
        path, msg = format_loc(tuple(loc)), err.get("msg", "")
        if kind == "json_invalid":
            path = "body"
            where = f" at character {loc[-1]}" if isinstance(loc[-1], int) else ""
            msg = f"{msg}{where}: {(err.get('ctx') or {}).get('error', '')}"
        elif loc == ["body"] and kind == "model_attributes_type" and not json_body:
            msg += " (send the body as JSON with Content-Type: application/json)"
        detail.append({"loc": loc, "path": path, "msg": msg, "type": kind})
    return detail


class JsonBodyRoute(APIRoute):
    """A body that is not UTF-8, nests past the JSON parser's depth or holds an integer of thousands
    of digits is malformed JSON like any other: 422 with the reason, where FastAPI says 400."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                cause = exc.__cause__
                if exc.status_code != 400 or not isinstance(cause, (ValueError, RecursionError)):
                    raise
                if isinstance(cause, UnicodeDecodeError):
                    loc: tuple[str | int, ...] = ("body", cause.start)
                    error = f"not UTF-8 ({cause.reason})"
                else:
                    loc, error = ("body",), beyond_json_limits(cause)
                raise RequestValidationError([{
                    "type": "json_invalid", "loc": loc, "msg": "JSON decode error", "ctx": {"error": error},
                }]) from exc

        return handle


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    json_body = "json" in request.headers.get("content-type", "")
    return JSONResponse(
        {"detail": validation_detail(list(exc.errors()), json_body)},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def _store_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    # The driver's words name hosts and ports: they go to the replica's log, not to the caller.
    log.warning("%s %s: metadata store unavailable: %s", _request.method, _request.url.path, describe_db_error(exc))
    return JSONResponse(
        {"detail": f"metadata store unavailable ({type(exc).__name__}); the API's log has the reason"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(SQLAlchemyError, _store_unavailable)
