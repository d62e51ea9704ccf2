"""The workflow spec as pydantic models: structure only (unknown keys are errors).

What the structure means — augmenter params, the columns each step reads and adds, the review
policy against the chain — is checked when a file is loaded (pipelines.workflows.loader).
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal

import pyarrow as pa
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from pipelines.spec.base import IDENTIFIER, StrictModel, check_names
from pipelines.spec.providers import ProviderSpec

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


FileKind = Literal["csv", "jsonl", "parquet"]


class FileSource(StrictModel):
    kind: FileKind
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
    # The query runs in a read-only transaction with these bounds (pipelines.io.sources): a source
    # never writes, and a runaway query or an unreachable host fails the run instead of hanging it.
    statement_timeout_seconds: float = Field(
        default=600.0, gt=0, le=24 * 3600, description="How long one query may run before PostgreSQL cancels it."
    )
    connect_timeout_seconds: int = Field(
        default=10, ge=2, le=600, description="How long connecting may take (libpq counts whole seconds, 2 at least)."
    )


class DatasetSource(StrictModel):
    """A catalogued version of a dataset (imported or written by a run); its record_uuid is kept.
    The run resolves it to one version's folder when it starts (pipelines.io.dataset_source)."""

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
    csv_escape_formulas: bool = Field(
        default=True,
        description="In the CSV export, prefix text cells that start with = + - @ tab or CR with ' so a spreadsheet"
                    " shows them rather than running them (OWASP's CSV injection rule); false for machine readers."
                    " The Parquet output keeps every value exact.",
    )
    batch_rows: int = Field(
        default=256, ge=1, le=1_000_000,
        description="Records per augment call, and at most per output file: what a crash can make a resumed run redo."
                    " Unset, 10,000 for a workflow whose steps call no provider.",
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
    max_failed_share: float | None = Field(
        default=None, ge=0, le=1,
        description="The run fails when more than this share of its valid records failed at a step;"
                    " by default, only when every one did.",
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def step_names(self) -> list[str]:
        """The augmenter steps' names: as given, else <use>_<index>."""
        return [s.name or f"{s.use}_{i}" for i, s in enumerate(self.steps)]

    def run_step_names(self) -> list[str]:
        """Every step a run records: validate, the augmenters, write."""
        return ["validate", *self.step_names(), "write"]


def missing_required_columns(column_names: list[str], schema: SchemaSpec) -> list[str]:
    """The required fields of the schema that a source's columns lack."""
    return [n for n, f in schema.fields.items() if f.required and n not in column_names]
