"""normalize_email: an email address checked for syntax (never DNS) and lower-cased."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from email_validator import validate_email

from pipelines.augmenters.registry import register
from pipelines.augmenters.single_column import ColumnAugmenter, ColumnParams


@register("normalize_email")
class NormalizeEmail(ColumnAugmenter):
    """Checks email address syntax without any network lookup and normalises valid ones
    (Unicode kept, domain in its Unicode form, everything lower-cased).

    Reads: `column` (string).
    Adds: `{prefix}_normalized`, `{prefix}_domain`, `{prefix}_valid` (bool).
    """

    Params = ColumnParams
    outputs = {"normalized": pa.string(), "domain": pa.string(), "valid": pa.bool_()}

    def parse(self, value: str) -> Mapping[str, Any]:
        try:
            email = validate_email(value, check_deliverability=False)
        except ValueError:  # EmailNotValidError, and UnicodeError from odd input, are ValueErrors
            return {"valid": False}
        # Local parts are case-sensitive by the RFC but not in practice; lower-case for matching.
        return {"normalized": email.normalized.lower(), "domain": email.domain.lower(), "valid": True}
