"""Loading a workflow file: YAML to a checked WorkflowSpec, every error reported by path.

Structure is checked by pydantic (unknown keys are errors); meaning — augmenter params, the
columns each step reads and adds, the review policy — by `check_steps` and `check_review`, before
anything runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from augment_core.settings import Settings
from pipelines.augmenters.registry import augmenters
from pipelines.review.policy import check_review
from pipelines.spec.errors import SpecError, pydantic_errors
from pipelines.spec.providers import ProviderError, load_providers_file
from pipelines.spec.workflow import FileSource, RedisStreamSource, WorkflowSpec
from pipelines.workflows.checks import check_own_providers, check_params, check_steps


def parse_spec(
    data: Any, source: str = "<spec>", base_dir: Path | None = None, providers_file: str | Path | None = None
) -> WorkflowSpec:
    """Validate a spec given as Python data; relative paths resolve against base_dir. Providers
    the steps name and the spec does not declare come from the providers file (default:
    AUGMENT_PROVIDERS_FILE), so that the spec carries every provider it uses to the workers; the
    spec's own providers may neither redeclare the file's nor name secrets (`check_own_providers`)."""
    if data is None:
        raise SpecError(source, ["(top level): the spec is empty"])
    if not isinstance(data, dict):
        raise SpecError(source, [f"(top level): expected a mapping, got {type(data).__name__}"])
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, pydantic_errors(exc) + check_params(data.get("steps"))) from None
    errors = _add_file_providers(spec, providers_file) + check_steps(spec) + _stream_errors(spec)
    if not errors:  # review names the chain's columns: only a valid chain has them
        errors = check_review(spec)
    if errors:
        raise SpecError(source, errors)
    return _resolve_paths(spec, base_dir) if base_dir else spec


def _stream_errors(spec: WorkflowSpec) -> list[str]:
    """A stream source names no Redis: it is the one of AUGMENT_REDIS_URL, which must be set."""
    if not isinstance(spec.source, RedisStreamSource):
        return []
    if Settings().redis_url:
        return []
    return [f"source: the redis_stream source reads {spec.source.stream!r} from the Redis of AUGMENT_REDIS_URL,"
            " which is not set"]


def load_spec(path: str | Path) -> WorkflowSpec:
    """Read, validate and resolve a workflow YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), [f"(file): cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), [f"(file): not valid UTF-8 ({exc.reason} at byte {exc.start})"]) from None
    return load_spec_text(text, str(path), path.resolve().parent)


def load_spec_text(text: str, source: str, base_dir: Path) -> WorkflowSpec:
    """A spec's YAML text, checked as `load_spec` checks a file; relative paths from `base_dir`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise SpecError(source, [f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}"]) from None
    return parse_spec(data, source, base_dir)


def _add_file_providers(spec: WorkflowSpec, providers_file: str | Path | None) -> list[str]:
    known = augmenters()
    wanted = {
        name for step in spec.steps if step.use in known
        for name in known[step.use].provider_names(step.params) if name not in spec.providers
    }
    if not wanted and not spec.providers:
        return []
    if providers_file is None:
        providers_file = Settings().providers_file
    try:
        declared = load_providers_file(providers_file)
    except ProviderError as exc:
        return [f"providers: {exc}"]
    errors = check_own_providers(spec.providers, declared, str(providers_file))
    spec.providers.update({name: declared.providers[name] for name in sorted(wanted) if name in declared.providers})
    return errors


def resolve_path(value: str, base_dir: Path) -> str:
    if "://" in value or Path(value).is_absolute():
        return value
    return str((base_dir / value).resolve())


def _resolve_paths(spec: WorkflowSpec, base_dir: Path) -> WorkflowSpec:
    if isinstance(spec.source, FileSource):
        spec.source.path = resolve_path(spec.source.path, base_dir)
    for step in spec.steps:
        for param in augmenters()[step.use].path_params:
            if isinstance(step.params.get(param), str):
                step.params[param] = resolve_path(step.params[param], base_dir)
    return spec


def preflight(spec: WorkflowSpec, source: str = "<spec>") -> None:
    """Refuse a run whose local input files are missing, before any Ray work starts."""
    errors = []
    if isinstance(spec.source, RedisStreamSource):
        errors.append("source.kind: a redis_stream source never ends: start its consumer with `augment stream start`")
    if isinstance(spec.source, FileSource) and "://" not in spec.source.path:
        if not Path(spec.source.path).exists():
            errors.append(f"source.path: no such file or folder: {spec.source.path}")
    for i, step in enumerate(spec.steps):
        for param in augmenters()[step.use].path_params:
            value = step.params.get(param)
            if isinstance(value, str) and "://" not in value and not Path(value).exists():
                errors.append(f"steps[{i}].params.{param}: no such file: {value}")
    if errors:
        raise SpecError(source, errors)
