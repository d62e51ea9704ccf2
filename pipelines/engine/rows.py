"""The in-process engine's row path: a few records (an online request's) held as Python values.

The columnar path costs about 150 Arrow calls a batch whatever its size, each with microseconds
of fixed cost: most of a one-record request (docs/benchmarks.md, "Speed round, part 9"). Here the
records are validated by the per-record code the columnar path itself uses for small batches, and
each step gets Python lists: a step that works value by value (`process_values`) computes them
directly, any other gets an Arrow batch of only the columns it reads. The values are those the
columnar path gives (`Augmenter.compute_values`); records that need what only it does — later
copies of a key, values people decided in review — are left to it (`Columnar`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipelines.augmenters.base import Augmenter, python_values
from pipelines.engine.chain import StepError
from pipelines.engine.validation import validated_rows
from pipelines.inference.context import Decisions, RunContext
from pipelines.inference.spans import counted, engine_span, record_step_statuses, step_batch
from pipelines.io.columns import ERRORS_COLUMN
from pipelines.io.json_records import json_columns
from pipelines.review.decisions import answering_from, decidable_types
from pipelines.spec.workflow import WorkflowSpec

# Up to this many records a call goes the row path (validation's own per-record limit).
ROW_PATH_RECORDS = 16

Rows = tuple[list[dict[str, Any]], list[dict[str, Any]]]  # (augmented records, {index, errors} of invalid)


@dataclass(frozen=True)
class Columnar:
    """The records need the columnar path; `decisions` answers its lookup with what was found here
    (None: it looks them up itself)."""

    decisions: Decisions | None


def augment_rows(spec: WorkflowSpec, chain: Sequence[Augmenter], schema: pa.Schema, context: RunContext,
                 records: Sequence[Any]) -> Rows | Columnar:
    """(the valid records augmented, as the output schema's columns; the invalid ones by index with
    their errors), or Columnar where the records need the columnar path."""
    fields = spec.schema_.fields
    with engine_span(spec, context, len(records)) as current:
        validated = validated_rows(json_columns(records, spec.schema_), len(records), spec.schema_)
        errors = validated[ERRORS_COLUMN]
        valid = [i for i, e in enumerate(errors) if e is None]
        ids = [validated["record_uuid"][i] for i in valid]
        if spec.schema_.key and spec.schema_.unique_key and len(set(ids)) < len(ids):
            return Columnar(None)  # a later copy of a key: quarantined with the columnar path's reason
        if ids and context.decisions is not None and (decidable := decidable_types(chain)):
            if found := context.decisions(ids, decidable):  # kept by the columnar path (review/decisions.py)
                return Columnar(answering_from(found))
        columns: dict[str, list[Any]] = {"record_uuid": ids}
        types: dict[str, pa.DataType] = {"record_uuid": pa.string()}
        for name, field in fields.items():
            columns[name] = python_values([validated[name][i] for i in valid], field.type.arrow)
            types[name] = field.type.arrow
        augmented = augmented_rows(chain, schema, columns, types, context) if ids else []
        invalid = [{"index": i, "errors": json.loads(e)} for i, e in enumerate(errors) if e is not None]
        counted(current, len(augmented), len(invalid))
    return augmented, invalid


def augmented_rows(chain: Sequence[Augmenter], schema: pa.Schema, columns: dict[str, list[Any]],
                   types: dict[str, pa.DataType], context: RunContext) -> list[dict[str, Any]]:
    """Valid records (their validated columns) through every step, as the output schema's records."""
    run_steps(chain, columns, types, len(columns["record_uuid"]), context)
    for name, arrow_type in zip(schema.names, schema.types):
        if types[name] != arrow_type:  # the columnar path's final cast
            columns[name] = pa.array(columns[name], types[name]).cast(arrow_type).to_pylist()
    return [dict(zip(schema.names, row)) for row in zip(*(columns[name] for name in schema.names))]


def run_steps(chain: Sequence[Augmenter], columns: dict[str, list[Any]], types: dict[str, pa.DataType],
              rows: int, context: RunContext) -> None:
    """Every step on the records' columns, in place: each adds (or overwrites) its columns."""
    for augmenter in chain:
        with step_batch(augmenter, rows, context) as span:
            try:
                added = augmenter.compute_values(columns, types, rows)
            except Exception as exc:
                raise StepError(augmenter, "failed", exc) from exc
            record_step_statuses(span, augmenter, added)
        columns.update(added)
        types.update(augmenter.adds())
