"""The in-process engine: the batch path's validation and augmenter chain on records held in
memory — a request to the API, a micro-batch of a stream, a review item's rerun."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from pipelines.augmenters.registry import build_chain
from pipelines.engine.chain import (
    first_seen_keys,
    mark_duplicates,
    output_schema,
    run_chain,
    setup_chain,
    split_valid,
)
from pipelines.engine.rows import ROW_PATH_RECORDS, Columnar, augment_rows
from pipelines.engine.validation import validate_table
from pipelines.inference.context import Decisions, RunContext
from pipelines.inference.spans import engine_call
from pipelines.io.columns import ERRORS_COLUMN
from pipelines.io.json_records import json_columns
from pipelines.spec.workflow import WorkflowSpec


@dataclass
class AugmentResult:
    """The augmented records, and the invalid ones by their index in the input with their errors."""

    records: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[dict[str, Any]] = field(default_factory=list)  # {"index": i, "errors": [...]}


class InProcessEngine:
    """A workflow ready to augment records in this process: chain built and reference tables
    loaded once."""

    def __init__(self, spec: WorkflowSpec, context: RunContext | None = None) -> None:
        self.spec = spec
        self.context = context or RunContext(providers=spec.providers)
        self.chain = setup_chain(build_chain(spec), self.context)
        self.schema = output_schema(spec)

    def raw_table(
        self, records: list[Any], origins: list[str] | None = None, unparsed: list[str | None] | None = None
    ) -> pa.Table:
        """Records as the raw text a CSV row would hold, so every path validates alike. A request's
        records are the rows of "request"; given `origins` (stream messages), each record is row 1
        of its own origin. `unparsed` holds why a record could not be read at all, if it could not."""
        columns = json_columns(records, self.spec.schema_, unparsed)
        parse_errors = columns.pop("_parse_error")
        n = len(records)
        sources = origins if origins is not None else ["request"] * n
        rows = [1] * n if origins is not None else list(range(1, n + 1))
        arrays = {name: pa.array(values, pa.string()) for name, values in columns.items()}
        arrays["_source"] = pa.array(sources, pa.string())
        arrays["_source_row"] = pa.array(rows, pa.int64())
        arrays["_source_order"] = pa.array([f"{s}\x1f{r:015d}" for s, r in zip(sources, rows)], pa.string())
        arrays["_parse_error"] = pa.array(parse_errors, pa.string())
        return pa.table(arrays)

    @engine_call
    def process(self, raw: pa.Table, decisions: Decisions | None = None) -> tuple[pa.Table, pa.Table]:
        """(the valid records augmented, with the output schema; the invalid ones as validated,
        with their errors and raw values) of a raw batch. `decisions`, where given, answers the
        lookup of decided values in place of the context's."""
        validated = validate_table(raw, self.spec.schema_)
        key = self.spec.schema_.key
        if key and self.spec.schema_.unique_key and raw.num_rows > 1:  # one record has no earlier copy
            validated = mark_duplicates(validated, first_seen_keys(validated), key)
        valid = split_valid(validated, True)
        augmented = (
            run_chain(self.chain, valid, self.schema,
                      context=self.context if decisions is None else replace(self.context, decisions=decisions))
            if valid.num_rows
            else self.schema.empty_table()
        )
        return augmented, split_valid(validated, False)

    def augment(self, records: list[Any]) -> AugmentResult:
        if len(records) > ROW_PATH_RECORDS:
            return self.augment_columnar(records)
        outcome = augment_rows(self.spec, self.chain, self.schema, self.context, records)
        if isinstance(outcome, Columnar):
            return self.augment_columnar(records, outcome.decisions)
        return AugmentResult(records=outcome[0], invalid=outcome[1])

    def augment_columnar(self, records: list[Any], decisions: Decisions | None = None) -> AugmentResult:
        """`augment` by the columnar path, whatever the number of records; `decisions`, where
        given, answers its lookup of decided values in place of the context's."""
        augmented, invalid = self.process(self.raw_table(records), decisions)
        rows, errors = invalid["_source_row"].to_pylist(), invalid[ERRORS_COLUMN].to_pylist()
        return AugmentResult(
            records=augmented.to_pylist(),
            invalid=[{"index": row - 1, "errors": json.loads(e)} for row, e in zip(rows, errors)],
        )


