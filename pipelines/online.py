"""The online path: the batch path's validation and augmenter code on records from a request."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipelines.inference.context import RunContext
from pipelines.plan import mark_duplicates, run_chain, setup_chain, split_valid
from pipelines.registry import build_chain, output_schema
from pipelines.sources import json_record
from pipelines.spec import WorkflowSpec
from pipelines.validation import ERRORS_COLUMN, validate_table


@dataclass
class OnlineResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[dict[str, Any]] = field(default_factory=list)  # {"index": i, "errors": [...]}


class OnlineWorkflow:
    """A workflow ready to augment requests: chain built and reference tables loaded once."""

    def __init__(self, spec: WorkflowSpec, context: RunContext | None = None) -> None:
        self.spec = spec
        self.context = context or RunContext(providers=spec.providers)
        self.chain = setup_chain(build_chain(spec), self.context)
        self.schema = output_schema(spec)

    def raw_table(self, records: list[Any]) -> pa.Table:
        """Records as the raw text a CSV row would hold, so both paths validate alike."""
        fields = list(self.spec.schema_.fields)
        columns: dict[str, list[Any]] = {name: [] for name in fields}
        parse_errors: list[str | None] = []
        for record in records:
            values, error = json_record(record, fields)
            parse_errors.append(error)
            for name in fields:
                columns[name].append(values.get(name))
        n = len(records)
        arrays = {name: pa.array(values, pa.string()) for name, values in columns.items()}
        arrays["_source"] = pa.array(["request"] * n, pa.string())
        arrays["_source_row"] = pa.array(range(1, n + 1), pa.int64())
        arrays["_source_order"] = pa.array([f"request\x1f{i:015d}" for i in range(1, n + 1)], pa.string())
        arrays["_parse_error"] = pa.array(parse_errors, pa.string())
        return pa.table(arrays)

    def augment(self, records: list[Any]) -> OnlineResult:
        validated = validate_table(self.raw_table(records), self.spec.schema_)
        key = self.spec.schema_.key
        if key and self.spec.schema_.unique_key:
            validated = mark_duplicates(validated, _first_seen(validated), key)
        result = OnlineResult()
        for i, errors in enumerate(validated[ERRORS_COLUMN].to_pylist()):
            if errors:
                result.invalid.append({"index": i, "errors": json.loads(errors)})
        valid = split_valid(validated, True)
        if valid.num_rows:
            result.records = run_chain(self.chain, valid, self.schema).to_pylist()
        return result


def _first_seen(validated: pa.Table) -> dict[str, str]:
    first: dict[str, str] = {}
    for record_id, order in zip(validated["record_uuid"].to_pylist(), validated["_source_order"].to_pylist()):
        if record_id is not None:
            first.setdefault(record_id, order)
    return first
