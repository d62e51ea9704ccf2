"""Errors told in one line, whatever wrapped them."""

from __future__ import annotations


def describe_error(exc: BaseException) -> str:
    """The error in one line. Ray wraps task and actor errors several times over: name the
    outermost error of ours, else the original error quoted at the end of Ray's own text."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        inner = getattr(current, "cause", None)
        current = inner if isinstance(inner, BaseException) else current.__cause__
    for candidate in chain:
        text = str(candidate).strip()
        if text and not type(candidate).__module__.startswith("ray."):
            return f"{type(candidate).__name__}: {text.splitlines()[0]}"[:2000]
    for candidate in reversed(chain):
        lines = [line.strip() for line in str(candidate).splitlines() if line.strip()]
        if lines:
            return lines[-1][:2000]
    return type(exc).__name__
