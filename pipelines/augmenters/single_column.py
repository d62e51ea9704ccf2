"""Shared params and base for augmenters that read one string column and add `{prefix}_<suffix>` columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import pandas as pd
import pyarrow as pa
from pydantic import Field

from pipelines.augmenters.base import (
    Augmenter,
    AugmenterParams,
    blank_to_none,
    map_distinct,
    string_values,
    values_of,
)
from pipelines.spec.base import IDENTIFIER

# The parse result of a value that is not one: every added column null but `valid`. One shared,
# read-only mapping, not a new dict for each of a batch's invalid values.
INVALID: Mapping[str, Any] = MappingProxyType({"valid": False})
# Short enough that `{prefix}_<suffix>` stays a readable column name.
PREFIX = r"^[A-Za-z][A-Za-z0-9_]{0,47}$"


class ColumnParams(AugmenterParams):
    column: str = Field(pattern=IDENTIFIER, description="The string column to read.")
    prefix: str | None = Field(
        default=None, pattern=PREFIX, description="Start of the added columns' names; default: the column name."
    )

    def output(self, suffix: str) -> str:
        return f"{self.prefix or self.column}_{suffix}"


class ColumnAugmenter(Augmenter):
    """Reads `column`; adds `{prefix}_<suffix>` for each suffix of `outputs`.

    Subclasses implement `parse` for one stripped, non-blank value; it runs once per distinct
    value in the batch, and null or blank values give null outputs. One that computes whole
    columns at once overrides `process_batch` instead.
    """

    params: ColumnParams
    outputs: ClassVar[dict[str, pa.DataType]]

    def reads(self) -> list[tuple[str, str]]:
        return [("column", self.params.column)]

    def adds(self) -> dict[str, pa.DataType]:
        return {self.params.output(suffix): arrow_type for suffix, arrow_type in self.outputs.items()}

    def parse(self, value: str) -> Mapping[str, Any]:
        """The outputs for one value, by suffix; a suffix left out is null."""
        raise NotImplementedError

    def process_batch(self, batch: pd.DataFrame) -> dict[str, Sequence[Any]]:
        return self.outputs_of(values_of(batch[self.params.column]))

    def process_arrow(self, batch: pa.Table) -> dict[str, Sequence[Any]] | None:
        values = string_values(batch.column(self.params.column))
        return None if values is None else self.outputs_of(values)

    def process_values(
        self, columns: Mapping[str, list[Any]], types: Mapping[str, pa.DataType]
    ) -> dict[str, Sequence[Any]] | None:
        column = self.params.column
        if not (pa.types.is_string(types[column]) or pa.types.is_large_string(types[column])):
            return None
        return self.outputs_of(columns[column])

    def outputs_of(self, column: list[Any]) -> dict[str, Sequence[Any]]:
        """The added columns for the column's values (None for null)."""
        values = [blank_to_none(v) for v in column]
        parsed = map_distinct(values, self.parse)
        return {
            self.params.output(suffix): [None if row is None else row.get(suffix) for row in parsed]
            for suffix in self.outputs
        }
