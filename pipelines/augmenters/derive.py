"""derive: a column computed from an expression over the record's columns (see pipelines.augmenters.expressions)."""

from __future__ import annotations

from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from pipelines.augmenters.base import Augmenter, AugmenterParams, plain
from pipelines.augmenters.expressions import (
    ExpressionError,
    column_names,
    convert,
    evaluate,
    parse_expression,
)
from pipelines.augmenters.registry import register
from pipelines.spec.base import IDENTIFIER
from pipelines.spec.workflow import FieldType


class DeriveParams(AugmenterParams):
    column: str = Field(pattern=IDENTIFIER, description="The column to add.")
    expression: str = Field(min_length=1, max_length=2000, description="e.g. concat(lower(city), '-', zip)")
    type: Literal["string", "integer", "float", "boolean"] = Field(
        default="string", description="The added column's type; a value that does not convert becomes null."
    )

    @field_validator("expression")
    @classmethod
    def _allowed(cls, expression: str) -> str:
        parse_expression(expression)
        return expression


@register("derive")
class Derive(Augmenter):
    """Computes `expression` over whole columns with Arrow kernels. Nulls propagate; x / 0,
    x // 0 and x % 0 are null; a null condition gives a null result; integer overflow is null.

    Reads: every column named in `expression` (any type).
    Adds: `column` (`type`).
    """

    Params = DeriveParams
    params: DeriveParams
    string_inputs = False

    def __init__(self, params: DeriveParams, step_name: str, overwrite: bool = False) -> None:
        super().__init__(params, step_name, overwrite)
        self.tree = parse_expression(params.expression)
        self.arrow_type = FieldType(params.type).arrow
        self.names = column_names(self.tree)

    def reads(self) -> list[tuple[str, str]]:
        return [("expression", name) for name in self.names]

    def adds(self) -> dict[str, pa.DataType]:
        return {self.params.column: self.arrow_type}

    def type_errors(self, columns: dict[str, pa.DataType]) -> list[tuple[str, str]]:
        """The expression on no rows of the declared types: a type mismatch shows at spec time,
        not at the first batch of a run or as a failed request."""
        empty = {name: pa.array([], columns[name]) for name in column_names(self.tree)}
        try:
            convert(evaluate(self.tree, empty, 0), self.arrow_type)
        except ExpressionError as exc:
            return [("expression", str(exc))]
        except pa.ArrowException:  # anything else depends on the values: left to run time
            return []
        return []

    def process_batch(self, batch: pd.DataFrame) -> dict[str, pd.Series]:
        result = self.derived({name: pa.array(batch[name]) for name in batch.columns}, len(batch))
        return {self.params.column: pd.Series(pd.arrays.ArrowExtensionArray(result))}

    def process_arrow(self, batch: pa.Table) -> dict[str, pa.Array | pa.ChunkedArray] | None:
        if not all(plain(column.type) for column in batch.columns):
            return None
        columns = {name: column.combine_chunks() for name, column in zip(batch.column_names, batch.columns)}
        return {self.params.column: self.derived(columns, batch.num_rows)}

    def derived(self, columns: dict[str, pa.Array | pa.ChunkedArray], rows: int) -> pa.Array | pa.ChunkedArray:
        """The added column for these columns of `rows` records."""
        try:
            result = convert(evaluate(self.tree, columns, rows), self.arrow_type)
        except ExpressionError as exc:  # the expression does not fit the column types: a spec error
            raise ExpressionError(f"step {self.step_name!r}: {exc}, in {self.params.expression!r}") from None
        if pa.types.is_floating(self.arrow_type):  # inf and nan are not values a user can use
            result = pc.if_else(pc.is_finite(result), result, None)
        if isinstance(result, pa.Scalar):
            result = pa.repeat(result, rows)
        return result
