"""The steps of a spec checked against its schema and the chain: params, providers, the columns
each step reads and adds."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from pipelines.augmenters.base import Augmenter, NestedParamsError
from pipelines.augmenters.registry import augmenters, build_step
from pipelines.spec.errors import pydantic_errors
from pipelines.spec.providers import ProvidersFile, ProviderSpec
from pipelines.spec.workflow import StepSpec, WorkflowSpec


def _built(
    step: StepSpec, step_name: str, i: int, known: dict[str, type[Augmenter]]
) -> tuple[Augmenter | None, list[str]]:
    """The step's augmenter, or the reasons it cannot be built (unknown augmenter, bad params)."""
    if step.use not in known:
        return None, [f"steps[{i}].use: unknown augmenter {step.use!r} (known: {', '.join(sorted(known))})"]
    try:
        return build_step(step, step_name), []
    except ValidationError as exc:
        return None, pydantic_errors(exc, ("steps", i, "params"))
    except NestedParamsError as exc:
        return None, pydantic_errors(exc.error, ("steps", i, "params", *exc.loc))


def check_params(raw_steps: Any) -> list[str]:
    """The errors of the steps' augmenters and params alone, for a spec whose structure failed:
    so that one round reports both (the columns need a valid schema, and wait for it)."""
    if not isinstance(raw_steps, list):
        return []
    known, errors = augmenters(), []
    for i, raw in enumerate(raw_steps):
        try:
            step = StepSpec.model_validate(raw)
        except ValidationError:
            continue  # its structure is among the errors already
        errors.extend(_built(step, step.name or f"{step.use}_{i}", i, known)[1])
    return errors


def check_own_providers(own: dict[str, ProviderSpec], file: ProvidersFile, providers_file: str) -> list[str]:
    """The workflow's own providers against the operator's file. A workflow may not redeclare a
    provider of the file (its key and allow-lists would go wherever the workflow points it), names
    no secret (the file alone says which variables go to which endpoint: a secret allowed for one
    provider, named by a provider a workflow points elsewhere, would leave with it), and allows
    only the private hosts the file's `workflow_allow_hosts` lists."""
    declared = file.providers
    errors = []
    for name, provider in own.items():
        where = f"providers.{name}"
        if name in declared:
            if provider != declared[name]:  # the file's own declaration, carried by a stored spec, is fine
                errors.append(f"{where}: {name!r} is declared in the providers file ({providers_file}); a workflow"
                              " may not redeclare it: remove it here to use the file's")
            continue
        if provider.api_key_env:
            errors.append(f"{where}.api_key_env: {provider.api_key_env!r}: a provider declared in a workflow may"
                          f" name no secret; the operator declares providers with keys in {providers_file}")
        if provider.allow_secrets:
            errors.append(f"{where}.allow_secrets: only the providers file ({providers_file}) allows secrets")
        for i, host in enumerate(provider.allow_hosts):
            if not file.allows_for_workflows(host):
                errors.append(f"{where}.allow_hosts[{i}]: {host!r} is not among the hosts the providers file"
                              f" ({providers_file}) lets workflows allow (workflow_allow_hosts); declare the"
                              " provider in that file, or ask its operator to list the host there")
    return errors


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
        augmenter, problems = _built(step, step_name, i, known)
        errors.extend(problems)
        if augmenter is None:
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
