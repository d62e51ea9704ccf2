"""JSON log lines and the redaction of secrets from every line (augment_core/logs.py)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from augment_core import logs, tracing
from augment_core.logs import JsonFormatter, RedactingFormatter, log_context, redact, register_secret_names

SECRET = "sk-test-5f1c0ffee0ddba11"


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    # A process's run (set by a coordinator; tests drive coordinators in this process) is none here.
    monkeypatch.setattr(logs, "_process_run_id", None)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("augment.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_time_level_run_step_and_message(captured) -> None:
    logger, out = captured
    logger.warning("plain")
    with log_context(run_id="r1", step="prof"):
        logger.info("inside %s", "a step")
    logger.error("named", extra={"run_id": "r2", "step": "write", "rows": 3})
    first, second, third = lines(out)
    assert set(first) == {"time", "level", "logger", "message", "run_id", "step"}
    assert first["time"].endswith("Z") and first["time"][:4].isdigit() and "T" in first["time"]
    assert (first["level"], first["logger"], first["message"]) == ("WARNING", "augment.test_logs", "plain")
    assert first["run_id"] is None and first["step"] is None
    assert (second["run_id"], second["step"], second["message"]) == ("r1", "prof", "inside a step")
    assert (third["run_id"], third["step"], third["rows"]) == ("r2", "write", 3)


def test_an_exception_and_the_current_span_are_in_the_line(captured) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    logger, out = captured
    tracing.use_exporter(InMemorySpanExporter())
    try:
        with tracing.span("work") as span:
            try:
                raise ValueError("broken")
            except ValueError:
                logger.exception("failed")
    finally:
        tracing.use_exporter(None)
    [line] = lines(out)
    assert "ValueError: broken" in line["exception"] and "Traceback" in line["exception"]
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"


def test_secrets_never_reach_a_line(monkeypatch: pytest.MonkeyPatch, captured) -> None:
    logger, out = captured
    monkeypatch.setenv("FAKE_LLM", SECRET)  # a provider's api_key_env, named like nothing in particular
    register_secret_names(["FAKE_LLM"])
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-1234567890")  # named like a secret
    key = "aug_1a2b3c4d_" + "x" * 43
    logger.warning("calling with %s", {"Authorization": f"Bearer {SECRET}"})
    logger.warning("key %s, token tok-1234567890, raw %s", key, SECRET)
    logger.warning("db postgresql://augment:hunter2pass@db:5432/augment, api_key=abcdef123456")
    try:
        raise RuntimeError(f"provider said no to {SECRET}")
    except RuntimeError:
        logger.exception("call failed")
    text = out.getvalue()
    assert SECRET not in text and "tok-1234567890" not in text and "x" * 43 not in text
    assert "hunter2pass" not in text and "abcdef123456" not in text
    assert "aug_1a2b3c4d_***" in text  # the key's public prefix stays, to tell keys apart
    assert len(lines(out)) == 4


def test_text_lines_are_redacted_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "sent %s", (SECRET,), None)
    assert SECRET not in RedactingFormatter().format(record)
    assert redact(f"Authorization: Bearer {SECRET}") == "Authorization: Bearer ***"


def test_configure_logging_formats_the_root_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    monkeypatch.setattr(root, "handlers", [handler])
    logs.configure_logging("json")
    assert isinstance(handler.formatter, JsonFormatter) and logs.current_format() == "json"
    logs.configure_logging("text")
    assert isinstance(handler.formatter, RedactingFormatter)
    with pytest.raises(ValueError, match="AUGMENT_LOG_FORMAT"):
        logs.configure_logging("xml")
