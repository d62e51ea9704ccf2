"""The augmenter registry: a decorator registers each class under its spec name.

Modules in pipelines/augmenters/ are discovered, not listed by hand.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

import pyarrow as pa
from pydantic import ValidationError

from pipelines.augmenters.base import Augmenter, NestedParamsError

if TYPE_CHECKING:
    from pipelines.spec import StepSpec, WorkflowSpec

_REGISTRY: dict[str, type[Augmenter]] = {}
_discovered = False


def register(name: str):
    """Class decorator: make an augmenter available as `use: <name>` in specs."""

    def decorate(cls: type[Augmenter]) -> type[Augmenter]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"augmenter {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def augmenters() -> dict[str, type[Augmenter]]:
    global _discovered
    if not _discovered:
        import pipelines.augmenters as package

        for module in pkgutil.iter_modules(package.__path__):
            if module.name != "base":
                importlib.import_module(f"{package.__name__}.{module.name}")
        _discovered = True
    return dict(_REGISTRY)


def build_step(step: "StepSpec", step_name: str) -> Augmenter:
    """An augmenter instance for a spec step (params validated; raises on bad params)."""
    cls = augmenters()[step.use]
    return cls(cls.Params.model_validate(step.params), step_name, step.overwrite)


def build_chain(spec: "WorkflowSpec") -> list[Augmenter]:
    return [build_step(step, name) for step, name in zip(spec.steps, spec.step_names())]


def check_steps(spec: "WorkflowSpec") -> list[str]:
    """Every problem with the steps, as 'path: reason', checked against the schema and chain."""
    from pipelines.spec import _pydantic_errors

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
            errors.extend(_pydantic_errors(exc, ("steps", i, "params")))
            continue
        except NestedParamsError as exc:
            errors.extend(_pydantic_errors(exc.error, ("steps", i, "params", *exc.loc)))
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


def output_schema(spec: "WorkflowSpec") -> pa.Schema:
    """The columns of the augmented dataset, in order: record_uuid, fields, added columns."""
    fields = {"record_uuid": pa.string()}
    fields.update({n: f.type.arrow for n, f in spec.schema_.fields.items()})
    for augmenter in build_chain(spec):
        fields.update(augmenter.adds())
    return pa.schema(list(fields.items()))
