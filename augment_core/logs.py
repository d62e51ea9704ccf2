"""How augment's processes log: text or one JSON object per line, never with a secret in it.

`configure_logging` is called once in each process augment controls (the CLI, each run
coordinator, Ray Data's augment actors, the API's and panels' replicas). With
`AUGMENT_LOG_FORMAT=json` every line is an object with `time` (ISO-8601, UTC), `level`, `logger`,
`message`, `run_id` and `step` (when known: `log_context`, or `extra={"run_id": ..., "step": ...}`),
`exception` (its traceback, when one is logged) and `trace_id`/`span_id` (when the line is written
inside a traced span). In either format `redact` removes secrets from every line: the values of
environment variables that hold keys (those named by the providers a process set up, see
`register_secret_names`, and any variable named like a key or password), `Authorization`/`Bearer`
credentials and the secret part of augment's own API keys.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from opentelemetry import trace

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MIN_SECRET = 6  # shorter values would redact ordinary words
# Variables whose values are secrets by their name alone.
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|DSN|CREDENTIALS?)$", re.IGNORECASE)
_PATTERNS = (
    # Authorization headers and bearer tokens, however quoted.
    (re.compile(r"(?i)\b(bearer|basic)(\s+|%20)[A-Za-z0-9._~+/=-]+"), r"\1\2***"),
    (re.compile(r"(?i)(authorization|x-api-key|api[_-]?key)(['\"]?\s*[:=]\s*['\"]?)"
                r"(?!\*\*\*|bearer\b|basic\b)[^\s'\",}]+"), r"\1\2***"),
    # augment's API keys (augment_core.identity): the public prefix stays, the secret goes.
    (re.compile(r"\b(aug_[0-9a-f]{8})_[A-Za-z0-9_-]{8,}"), r"\1_***"),
    # Passwords in URLs (database, Redis).
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\1***@"),
)
_run_id: ContextVar[str | None] = ContextVar("augment_log_run_id", default=None)
_step: ContextVar[str | None] = ContextVar("augment_log_step", default=None)
_process_run_id: str | None = None
_format = "text"
_secret_names: set[str] = set()
_lock = threading.Lock()
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
# Loggers that come with their own handlers (and do not reach the root's): formatted alike.
OWN_HANDLERS = ("ray", "ray.data", "ray.serve")


# secrets ---------------------------------------------------------------------------------------
def register_secret_names(names: Iterable[str]) -> None:
    """Environment variables whose values must never appear in a log line (a provider's key)."""
    with _lock:
        _secret_names.update(n for n in names if n)


def _secret_values() -> list[str]:
    names = set(_secret_names) | {n for n in os.environ if SECRET_NAME.search(n)}
    values = {os.environ.get(n, "") for n in names}
    return sorted((v for v in values if len(v) >= MIN_SECRET), key=len, reverse=True)


def redact(text: str) -> str:
    """`text` without any secret this process knows of."""
    for value in _secret_values():
        if value in text:
            text = text.replace(value, "***")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# what a line is about ------------------------------------------------------------------------------
@contextmanager
def log_context(run_id: str | None = None, step: str | None = None) -> Iterator[None]:
    """Lines logged inside the block name this run and step (unless they name their own)."""
    tokens = []
    if run_id is not None:
        tokens.append((_run_id, _run_id.set(run_id)))
    if step is not None:
        tokens.append((_step, _step.set(step)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def set_run(run_id: str | None) -> None:
    """Every line of this process names `run_id` unless its context says otherwise: a run
    coordinator's process (one actor each), whose threads start without the caller's context."""
    global _process_run_id
    _process_run_id = run_id


# formats -------------------------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, run_id, step (+ exception, trace ids,
    and whatever `extra=` added)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "run_id": getattr(record, "run_id", None) or _run_id.get() or _process_run_id,
            "step": getattr(record, "step", None) or _step.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"], line["span_id"] = f"{context.trace_id:032x}", f"{context.span_id:016x}"
        return redact(json.dumps(line, ensure_ascii=False, default=str))


class RedactingFormatter(logging.Formatter):
    """Any formatter's lines, without secrets."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def current_format() -> str:
    """The format `configure_logging` installed in this process ('text' before it ran)."""
    return _format


def formatter_for(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else RedactingFormatter()


def configure_logging(log_format: str | None = None, level: int | None = None) -> None:
    """Install augment's format (and redaction) on this process's handlers: the root logger's
    (a stderr handler is added when it has none) and those of Ray's own loggers. `log_format`
    None: AUGMENT_LOG_FORMAT, else text. Safe to call again (a replica rebuilt, a second actor)."""
    global _format
    chosen = (log_format or os.environ.get("AUGMENT_LOG_FORMAT") or "text").strip().lower()
    if chosen not in FORMATS:
        raise ValueError(f"AUGMENT_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {chosen!r}")
    _format = chosen
    root = logging.getLogger()
    if not root.handlers:  # what Python's last-resort handler did: warnings and errors, to stderr
        fallback = logging.StreamHandler(sys.stderr)
        fallback.setLevel(logging.WARNING if level is None else level)
        fallback.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(fallback)
    if level is not None:
        root.setLevel(level)
    handlers = list(root.handlers)
    for name in OWN_HANDLERS:
        handlers += logging.getLogger(name).handlers
    for handler in handlers:
        current = handler.formatter
        if chosen == "json":
            handler.setFormatter(JsonFormatter())
        elif isinstance(current, JsonFormatter):
            handler.setFormatter(RedactingFormatter())
        elif not isinstance(current, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(current))
