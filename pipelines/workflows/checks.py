"""The steps of a spec checked against its schema and the chain: params, providers, the columns
each step reads and adds."""

from __future__ import annotations

import pyarrow as pa
from pydantic import ValidationError

from pipelines.augmenters.base import NestedParamsError
from pipelines.augmenters.registry import augmenters, build_step
from pipelines.spec.errors import pydantic_errors
from pipelines.spec.workflow import WorkflowSpec


def check_steps(spec: WorkflowSpec) -> list[str]:
    """Every problem with the steps, as 'path: reason', checked against the schema and chain."""
    known = augmenters()
    columns: dict[str, pa.DataType] = {"record_uuid": pa.string()}
    columns.update({n: f.type.arrow for n, f in spec.schema_.fields.items()})
    errors: list[str] = []
    seen_names: set[str] = set()
    for i, (step, step_name) in enumerate(zip(spec.steps, spec.step_names())):
        where = f"steps[{i}]"
        if step_name in seen_names:
            errors.append(f"{where}.name: duplicate step name {step_name!r}")
        seen_names.add(step_name)
        if step.use not in known:
            errors.append(f"{where}.use: unknown augmenter {step.use!r} (known: {', '.join(sorted(known))})")
            continue
        try:
            augmenter = build_step(step, step_name)
        except ValidationError as exc:
            errors.extend(pydantic_errors(exc, ("steps", i, "params")))
            continue
        except NestedParamsError as exc:
            errors.extend(pydantic_errors(exc.error, ("steps", i, "params", *exc.loc)))
            continue
        for param, reason in augmenter.provider_errors(spec.providers):
            errors.append(f"{where}.params.{param}: {reason}")
        for param, column in augmenter.reads():
            if column not in columns:
                errors.append(
                    f"{where}.params.{param}: {column!r} is not a field of the schema"
                    " or a column added by an earlier step"
                )
            elif augmenter.string_inputs and not pa.types.is_string(columns[column]):
                errors.append(f"{where}.params.{param}: {column!r} is {columns[column]}, {step.use} reads strings")
        read = [column for _, column in augmenter.reads()]
        if all(column in columns for column in read):
            for param, reason in augmenter.type_errors({column: columns[column] for column in read}):
                errors.append(f"{where}.params.{param}: {reason}")
        for column, arrow_type in augmenter.adds().items():
            if column in columns and not step.overwrite:
                errors.append(
                    f"{where}: adds {column!r}, which already exists (set overwrite: true to replace it)"
                )
            columns[column] = arrow_type
    return errors
