"""`augment preview`: the exact requests a run would send, and what the whole input would cost.

Built by the run's own code — read, validate, the deterministic steps, each inference step's
`build_request` — with no provider called: an inference step's outputs are left empty for the
steps after it. The estimate is an upper bound (every reply at max_tokens, no cache hit).
"""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa
import ray

from augment_core.storage import StoragePaths
from pipelines.augmenters.base import Augmenter
from pipelines.augmenters.inference_base import InferenceAugmenter, Outcome
from pipelines.augmenters.registry import build_chain
from pipelines.engine.chain import setup_chain, split_valid
from pipelines.engine.validation import validate_table
from pipelines.inference.client import Request
from pipelines.inference.context import RunContext
from pipelines.io.resources import task_args
from pipelines.io.sources import read_source
from pipelines.operations.preview_result import Preview, StepEstimate
from pipelines.spec.workflow import SchemaSpec, WorkflowSpec


def dry_chain(chain: list[Augmenter], table: pa.Table) -> tuple[pa.Table, dict[str, list[Request | str]]]:
    """Run the deterministic steps; for inference steps, build their requests instead of calling
    and add their columns empty. Returns the table and each inference step's requests."""
    requests: dict[str, list[Request | str]] = {}
    for augmenter in chain:
        if not (isinstance(augmenter, InferenceAugmenter) and augmenter.calls_provider):
            table = augmenter.apply(table)
            continue
        built = augmenter.requests_for(table)
        requests[augmenter.step_name] = built
        columns = augmenter.columns_of([Outcome("skipped", error="preview: not called")] * table.num_rows)
        for name, arrow_type in augmenter.adds().items():
            table = table.append_column(pa.field(name, arrow_type), pa.array(columns[name], arrow_type))
    return table, requests


def _estimates(chain: list[Augmenter], requests: dict[str, list[Request | str]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for augmenter in chain:
        if isinstance(augmenter, InferenceAugmenter) and augmenter.step_name in requests:
            totals: defaultdict[str, float] = defaultdict(float)
            for request in requests[augmenter.step_name]:
                if isinstance(request, str):
                    totals["unbuildable"] += 1
                    continue
                tokens_in, tokens_out = augmenter.estimate(request)
                totals["requests"] += 1
                totals["tokens_in"] += tokens_in
                totals["tokens_out_max"] += tokens_out
                assert augmenter.provider is not None
                totals["cost_max_usd"] += augmenter.provider.prices.cost(tokens_in, tokens_out)
            out[augmenter.step_name] = dict(totals)
    return out


def preview(spec: WorkflowSpec, rows: int = 3, paths: StoragePaths | None = None) -> Preview:
    """Sample requests for the first `rows` valid records, and the estimate for all of them."""
    schema = spec.schema_

    def estimate_batch(table: pa.Table) -> pa.Table:
        validated = validate_table(table, schema)
        valid = split_valid(validated, True)
        chain = setup_chain(build_chain(spec), RunContext(providers=spec.providers, dry_run=True))
        _, requests = dry_chain(chain, valid)
        rows_out = [{"step": step, "key": key, "value": float(value)}
                    for step, totals in _estimates(chain, requests).items() for key, value in totals.items()]
        rows_out.append({"step": "", "key": "in", "value": float(table.num_rows)})
        rows_out.append({"step": "", "key": "valid", "value": float(valid.num_rows)})
        return pa.Table.from_pylist(
            rows_out, schema=pa.schema([("step", pa.string()), ("key", pa.string()), ("value", pa.float64())])
        )

    raw = read_source(spec.source, schema, paths)
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for row in raw.map_batches(estimate_batch, batch_format="pyarrow", batch_size=None, **task_args()).iter_rows():
        totals[(row["step"], row["key"])] += row["value"]

    result = Preview(rows_in=int(totals[("", "in")]), valid=int(totals[("", "valid")]))
    chain = setup_chain(build_chain(spec), RunContext(providers=spec.providers, dry_run=True))
    for augmenter in chain:
        if isinstance(augmenter, InferenceAugmenter) and augmenter.calls_provider:
            name = augmenter.step_name
            result.steps.append(StepEstimate(
                step=name, provider=augmenter.params.provider, model=augmenter.model(),
                requests=int(totals[(name, "requests")]), unbuildable=int(totals[(name, "unbuildable")]),
                tokens_in=int(totals[(name, "tokens_in")]), tokens_out_max=int(totals[(name, "tokens_out_max")]),
                cost_max_usd=totals[(name, "cost_max_usd")],
            ))
    sample = _first_valid(raw, schema, rows)
    if sample.num_rows:
        _, requests = dry_chain(chain, sample)
        for i in range(sample.num_rows):
            for step, built in requests.items():
                request = built[i]
                shown = {"error": request} if isinstance(request, str) else request.public()
                result.samples.append({"record": i + 1, "step": step, "request": shown})
    return result


def _first_valid(raw: ray.data.Dataset, schema: SchemaSpec, rows: int) -> pa.Table:
    tables = []
    count = 0
    for batch in raw.iter_batches(batch_format="pyarrow", batch_size=1024):
        valid = split_valid(validate_table(batch, schema), True)
        tables.append(valid.slice(0, rows - count))
        count += min(rows - count, valid.num_rows)
        if count >= rows:
            break
    return pa.concat_tables(tables) if tables else pa.table({})
