"""The workflow spec (YAML) as pydantic models, with every error reported by path.

Structure is checked by pydantic (unknown keys are errors); meaning — augmenter params,
the columns each step reads and adds — by `check_steps`, before anything runs.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow as pa
import yaml
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from pipelines.models import IDENTIFIER, StrictModel, check_names
from pipelines.providers import ProviderSpec

RESERVED_COLUMNS = frozenset({"record_uuid"})
STREAM_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:{}-]{0,199}$"  # Redis keys and group names we accept


class FieldType(str, Enum):
    string = "string"
    integer = "integer"
    float = "float"
    boolean = "boolean"
    date = "date"
    datetime = "datetime"

    @property
    def arrow(self) -> pa.DataType:
        return ARROW_TYPES[self]


ARROW_TYPES: dict[FieldType, pa.DataType] = {
    FieldType.string: pa.string(),
    FieldType.integer: pa.int64(),
    FieldType.float: pa.float64(),
    FieldType.boolean: pa.bool_(),
    FieldType.date: pa.date32(),
    FieldType.datetime: pa.timestamp("us", tz="UTC"),
}


class FieldSpec(StrictModel):
    """One declared column: its type and the constraints a record must meet."""

    type: FieldType = FieldType.string
    required: bool = False
    description: str | None = None
    regex: str | None = Field(default=None, description="Full match, for string fields.")
    min: float | None = Field(default=None, description="Lowest value, for numbers.")
    max: float | None = Field(default=None, description="Highest value, for numbers.")
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=1)
    enum: list[str | int | float] | None = Field(default=None, min_length=1)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _constraints_fit_type(self) -> "FieldSpec":
        numeric = self.type in (FieldType.integer, FieldType.float)
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"min/max apply to integer and float fields, not {self.type.value}")
        textual = self.type == FieldType.string
        if (self.regex or self.min_length is not None or self.max_length is not None) and not textual:
            raise ValueError(f"regex/min_length/max_length apply to string fields, not {self.type.value}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ValueError(f"min_length ({self.min_length}) is greater than max_length ({self.max_length})")
        # Enum values are compared with the typed value, so they must have the field's type.
        if self.enum is not None:
            if textual:
                self.enum = [str(v) for v in self.enum]  # YAML reads `enum: [1, 2]` as numbers
            elif not numeric:
                raise ValueError(f"enum applies to string, integer and float fields, not {self.type.value}")
            elif any(isinstance(v, str) for v in self.enum):
                raise ValueError(f"enum values of a {self.type.value} field must be numbers")
        return self


class SchemaSpec(StrictModel):
    fields: dict[str, FieldSpec] = Field(min_length=1)
    key: list[str] = Field(
        default_factory=list,
        description="Fields that identify a record; record_uuid derives from them.",
    )
    unique_key: bool = Field(default=True, description="Quarantine later records with a seen key.")

    @field_validator("key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("fields")
    @classmethod
    def _field_names(cls, fields: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        check_names(fields, "field name")
        for name in fields:
            if name in RESERVED_COLUMNS:
                raise ValueError(f"field name {name!r} is reserved")
        return fields

    @model_validator(mode="after")
    def _key_fields_exist(self) -> "SchemaSpec":
        missing = [k for k in self.key if k not in self.fields]
        if missing:
            raise ValueError(f"key field(s) {missing} are not fields of the schema")
        return self

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(name, f.type.arrow) for name, f in self.fields.items()])


class FileSource(StrictModel):
    kind: Literal["csv", "jsonl", "parquet"]
    path: str = Field(min_length=1, description="A file, a folder of files, or an s3:// URL.")
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="CSV only.")


class PostgresSource(StrictModel):
    kind: Literal["postgres"]
    query: str = Field(min_length=1)
    dsn_env: str = Field(
        default="AUGMENT_SOURCE_DSN",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Name of the environment variable that holds the connection string.",
    )


class DatasetSource(StrictModel):
    """A catalogued version of a dataset (imported or written by a run); its record_uuid is kept.
    The run resolves it to one version's folder when it starts (pipelines.dataset_source)."""

    kind: Literal["dataset"]
    name: str = Field(pattern=IDENTIFIER)
    version: int | Literal["latest"] = Field(
        default="latest", description="A version number, or 'latest': the newest when the run starts."
    )
    _resolved: tuple[int, str] | None = PrivateAttr(default=None)

    @field_validator("version", mode="before")
    @classmethod
    def _number_or_latest(cls, value: Any) -> Any:
        if value == "latest" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"expected a version number (1 or more) or 'latest', got {value!r}")

    def resolve(self, version: int, path: str) -> None:
        self._resolved = (version, path)

    @property
    def resolved_version(self) -> int | None:
        return self._resolved[0] if self._resolved else None

    @property
    def path(self) -> str:
        """The resolved version's Parquet folder; empty until resolved."""
        return self._resolved[1] if self._resolved else ""


class RedisStreamSource(StrictModel):
    """Records from a Redis stream (AUGMENT_REDIS_URL), one per message, read continuously by a
    consumer group (`augment stream start`). A message holds its record as a JSON object in
    `field` (format json), or as its own fields (format fields: each is one raw value)."""

    kind: Literal["redis_stream"]
    stream: str = Field(pattern=STREAM_NAME, description="The stream's key.")
    group: str = Field(pattern=STREAM_NAME, description="The consumer group; created when missing.")
    format: Literal["json", "fields"] = "json"
    field: str = Field(default="record", min_length=1, max_length=200, description="json: the record's field.")
    batch_size: int = Field(default=100, ge=1, le=10_000, description="Messages per micro-batch at most.")
    block_ms: int = Field(
        default=1000, ge=10, le=30_000, description="How long a read waits for messages (and a stop for the read)."
    )
    start: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a new group starts: the stream's first message, or the next one added."
    )


SourceSpec = Annotated[FileSource | PostgresSource | DatasetSource | RedisStreamSource, Field(discriminator="kind")]


class StepSpec(StrictModel):
    use: str = Field(description="The augmenter's registry name, e.g. normalize_url.")
    name: str | None = Field(default=None, pattern=IDENTIFIER)
    params: dict[str, Any] = Field(default_factory=dict)
    overwrite: bool = Field(default=False, description="Allow replacing existing columns.")


class SinkSpec(StrictModel):
    dataset: str = Field(pattern=IDENTIFIER)
    export_csv: bool = False
    batch_rows: int = Field(
        default=256, ge=1, le=1_000_000,
        description="Records per augment call, and at most per output file: what a crash can make a resumed run redo.",
    )


class BudgetSpec(StrictModel):
    max_usd: float = Field(gt=0, description="No call is sent that could take a run's provider cost past this.")


class ReviewRule(StrictModel):
    """Which records a person reviews: one whose `field` is below a confidence, fails a regex or
    is empty, or one a step (`step`) augmented, or failed on (`failed: true`)."""

    field: str | None = Field(default=None, pattern=IDENTIFIER)
    step: str | None = Field(default=None, pattern=IDENTIFIER)
    below: float | None = Field(default=None, description="The field's value is below this (a confidence).")
    regex: str | None = Field(default=None, description="The field's value does not fully match this.")
    non_empty: bool = Field(default=False, description="The field is null or blank.")
    failed: bool = Field(default=False, description="The step's <step>_status is 'error'.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return FieldSpec._compiles(value)

    @model_validator(mode="after")
    def _one_kind(self) -> "ReviewRule":
        checks = [k for k in ("below", "regex", "non_empty") if getattr(self, k) not in (None, False)]
        if (self.field is None) == (self.step is None):
            raise ValueError("a rule names either a field or a step")
        if self.field is not None and len(checks) != 1:
            raise ValueError("a field rule takes exactly one of below, regex, non_empty")
        if self.step is not None and checks:
            raise ValueError(f"a step rule takes no {', '.join(checks)}: those check a field")
        if self.field is not None and self.failed:
            raise ValueError("failed applies to a step rule")
        return self


class ReviewSpec(StrictModel):
    """What goes to the review queue after a run: `none`, `all` records, or those `rules` match."""

    policy: Literal["none", "all", "rules"] = "none"
    rules: list[ReviewRule] = Field(default_factory=list, max_length=100)
    fields: list[str] | None = Field(
        default=None, min_length=1, description="Fields to review; default: the outputs of the steps concerned."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):  # review: all
            return {"policy": value}
        if isinstance(value, dict) and "policy" not in value and value.get("rules"):
            return {**value, "policy": "rules"}
        return value

    @model_validator(mode="after")
    def _rules_fit_policy(self) -> "ReviewSpec":
        if self.policy == "rules" and not self.rules:
            raise ValueError("policy rules needs at least one rule")
        if self.policy != "rules" and self.rules:
            raise ValueError(f"rules apply to policy rules, not {self.policy}")
        return self


class WorkflowSpec(StrictModel):
    name: str = Field(pattern=IDENTIFIER)
    version: int = Field(default=1, ge=1)
    description: str | None = None
    providers: dict[str, ProviderSpec] = Field(
        default_factory=dict, description="Providers of this workflow; others come from the providers file."
    )
    source: SourceSpec
    schema_: SchemaSpec = Field(alias="schema")
    steps: list[StepSpec] = Field(default_factory=list)
    sink: SinkSpec
    budget: BudgetSpec | None = None
    review: ReviewSpec = Field(default_factory=ReviewSpec)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def step_names(self) -> list[str]:
        return [s.name or f"{s.use}_{i}" for i, s in enumerate(self.steps)]


class SpecError(Exception):
    """A spec that cannot run; `errors` holds one 'path: reason' line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(f"  {e}" for e in errors))


def format_loc(loc: tuple[Any, ...]) -> str:
    """('steps', 2, 'params', 'column') -> 'steps[2].params.column'."""
    text = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "(top level)"


def _pydantic_errors(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        # Drop discriminator tags ('source', 'csv', 'path') and pydantic's own markers.
        if len(loc) > 1 and loc[0] == "source" and loc[1] in (
            "csv", "jsonl", "parquet", "postgres", "dataset", "redis_stream"
        ):
            loc = loc[:1] + loc[2:]
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif (err["loc"] and err["loc"][-1] == "[key]") or err["type"] == "invalid_key":
            # pydantic puts the bad key itself in the location, with True shown as 1: report the
            # mapping that holds it, and the key as YAML produced it.
            loc = loc[:-2] if loc[-1] == "[key]" else loc[:-1]
            message = (
                f"key {err['input']!r} is not a string"
                " (YAML reads unquoted on/off/yes/no as booleans: quote it)"
            )
        lines.append(f"{format_loc(loc)}: {message}")
    return lines


def parse_spec(
    data: Any, source: str = "<spec>", base_dir: Path | None = None, providers_file: str | Path | None = None
) -> WorkflowSpec:
    """Validate a spec given as Python data; relative paths resolve against base_dir. Providers
    the steps name and the spec does not declare come from the providers file (default:
    AUGMENT_PROVIDERS_FILE), so that the spec carries every provider it uses to the workers."""
    if data is None:
        raise SpecError(source, ["(top level): the spec is empty"])
    if not isinstance(data, dict):
        raise SpecError(source, [f"(top level): expected a mapping, got {type(data).__name__}"])
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, _pydantic_errors(exc)) from None
    from pipelines.registry import check_steps  # the registry imports spec models

    errors = _add_file_providers(spec, providers_file) + check_steps(spec) + _stream_errors(spec)
    if not errors:  # review names the chain's columns: only a valid chain has them
        from pipelines.review import check_review

        errors = check_review(spec)
    if errors:
        raise SpecError(source, errors)
    return _resolve_paths(spec, base_dir) if base_dir else spec


def _stream_errors(spec: WorkflowSpec) -> list[str]:
    """A stream source names no Redis: it is the one of AUGMENT_REDIS_URL, which must be set."""
    if not isinstance(spec.source, RedisStreamSource):
        return []
    from augment_core.settings import Settings

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
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise SpecError(str(path), [f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}"]) from None
    return parse_spec(data, str(path), path.resolve().parent)


def _add_file_providers(spec: WorkflowSpec, providers_file: str | Path | None) -> list[str]:
    from pipelines.providers import ProviderError, load_providers_file
    from pipelines.registry import augmenters

    known = augmenters()
    wanted = {
        name for step in spec.steps if step.use in known
        for name in known[step.use].provider_names(step.params) if name not in spec.providers
    }
    if not wanted:
        return []
    if providers_file is None:
        from augment_core.settings import Settings

        providers_file = Settings().providers_file
    try:
        declared = load_providers_file(providers_file)
    except ProviderError as exc:
        return [f"providers: {exc}"]
    spec.providers.update({name: declared[name] for name in sorted(wanted) if name in declared})
    return []


def resolve_path(value: str, base_dir: Path) -> str:
    if "://" in value or Path(value).is_absolute():
        return value
    return str((base_dir / value).resolve())


def _resolve_paths(spec: WorkflowSpec, base_dir: Path) -> WorkflowSpec:
    if isinstance(spec.source, FileSource):
        spec.source.path = resolve_path(spec.source.path, base_dir)
    from pipelines.registry import augmenters

    for step in spec.steps:
        for param in augmenters()[step.use].path_params:
            if isinstance(step.params.get(param), str):
                step.params[param] = resolve_path(step.params[param], base_dir)
    return spec


def preflight(spec: WorkflowSpec, source: str = "<spec>") -> None:
    """Refuse a run whose local input files are missing, before any Ray work starts."""
    from pipelines.registry import augmenters

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
