"""Prompt and URL templates with {{field}} placeholders."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9_]*)\s*\}\}")
MALFORMED = re.compile(r"\{\{(?!\s*[A-Za-z][A-Za-z0-9_]*\s*\}\})")


def placeholders(template: str) -> list[str]:
    """The fields a template reads, in order of first use."""
    return list(dict.fromkeys(PLACEHOLDER.findall(template)))


def checked_template(template: str | None) -> str | None:
    """The template as given; ValueError (for a params validator) when it cannot be rendered."""
    match = MALFORMED.search(template) if template else None
    if match:
        raise ValueError(f"malformed placeholder at character {match.start()}: use {{{{field}}}} with a field name")
    return template


def text_of(value: Any) -> str:
    """A value as it appears in a rendered template: nulls are empty, the rest their text."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def render(template: str, record: Mapping[str, Any], escape: Callable[[str], str] = lambda s: s) -> str:
    return PLACEHOLDER.sub(lambda m: escape(text_of(record.get(m.group(1)))), template)


def template_hash(*templates: Any) -> str:
    """A short hash naming the templates a value came from (in provenance)."""
    text = json.dumps(templates, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
