"""normalize_phone: a phone number in E.164 form, with the region it belongs to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import phonenumbers
import pyarrow as pa
from pydantic import Field, field_validator

from pipelines.augmenters.base import Augmenter, blank_to_none, map_distinct, string_values, values_of
from pipelines.augmenters.registry import register
from pipelines.augmenters.single_column import ColumnParams
from pipelines.spec.base import IDENTIFIER

_OUTPUTS = {"e164": pa.string(), "valid": pa.bool_(), "region": pa.string()}  # in _parse's order


def _region(value: str | None) -> str | None:
    """An ISO alpha-2 code phonenumbers knows, upper-cased, or None."""
    code = (value or "").strip().upper()
    return code if code in phonenumbers.SUPPORTED_REGIONS else None


class NormalizePhoneParams(ColumnParams):
    default_region: str | None = Field(
        default=None,
        description="ISO 3166-1 alpha-2 region for numbers written without a country code, e.g. FR.",
    )
    region_column: str | None = Field(
        default=None,
        pattern=IDENTIFIER,
        description="Column with a per-record ISO alpha-2 region; default_region where it is null or unknown.",
    )

    @field_validator("default_region")
    @classmethod
    def _supported(cls, value: str | None) -> str | None:
        if value is not None and _region(value) is None:
            raise ValueError(f"{value!r} is not an ISO alpha-2 region that phonenumbers supports")
        return _region(value)


@register("normalize_phone")
class NormalizePhone(Augmenter):
    """Parses phone numbers with phonenumbers, in the record's region (from `region_column`, else
    `default_region`). Without any region, a leading "00" is read as the international prefix.

    Reads: `column` (string), `region_column` (string, optional).
    Adds: `{prefix}_e164`, `{prefix}_valid` (bool), `{prefix}_region` (the number's region).
    """

    Params = NormalizePhoneParams
    params: NormalizePhoneParams

    def reads(self) -> list[tuple[str, str]]:
        region = [("region_column", self.params.region_column)] if self.params.region_column else []
        return [("column", self.params.column), *region]

    def adds(self) -> dict[str, pa.DataType]:
        return {self.params.output(suffix): arrow_type for suffix, arrow_type in _OUTPUTS.items()}

    def process_batch(self, batch: pd.DataFrame) -> dict[str, Sequence[Any]]:
        region = self.params.region_column
        return self.outputs_of(values_of(batch[self.params.column]), values_of(batch[region]) if region else None)

    def process_arrow(self, batch: pa.Table) -> dict[str, Sequence[Any]] | None:
        numbers = string_values(batch.column(self.params.column))
        region = self.params.region_column
        regions = string_values(batch.column(region)) if region else None
        if numbers is None or (region and regions is None):
            return None
        return self.outputs_of(numbers, regions)

    def outputs_of(self, column: list[Any], region_column: list[Any] | None) -> dict[str, Sequence[Any]]:
        """The added columns for the numbers' values and, given a region column, its values."""
        numbers = [blank_to_none(v) for v in column]
        if region_column is not None:
            regions = [_region(r) or self.params.default_region for r in region_column]
        else:
            regions = [self.params.default_region] * len(numbers)
        keys = [None if n is None else (n, r) for n, r in zip(numbers, regions)]
        parsed = map_distinct(keys, lambda key: _parse(*key))
        rows = [row or (None, None, None) for row in parsed]
        return {self.params.output(suffix): [row[i] for row in rows] for i, suffix in enumerate(_OUTPUTS)}


def _parse(value: str, region: str | None) -> tuple[str | None, bool, str | None]:
    """(E.164, valid, region) of one number; a number that parses but cannot exist is invalid."""
    if region is None and value.startswith("00"):
        value = "+" + value[2:]  # "00" is the international prefix almost everywhere
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None, False, None
    if not phonenumbers.is_valid_number(number):
        return None, False, None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, True, phonenumbers.region_code_for_number(number)
