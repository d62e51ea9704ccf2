"""Request and response bodies of the API, kept apart from the store's and spec's models."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from augment_core.store import DatasetVersion, RunRecord, StepState
from pipelines.workflows.folder import WorkflowEntry

MAX_RECORDS = 1000


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    store: Literal["ok", "unavailable"] = Field(description="Whether the metadata store answered a query.")


class StepOut(BaseModel):
    name: str
    use: str
    params: dict[str, Any]


class SinkOut(BaseModel):
    dataset: str
    export_csv: bool


class WorkflowOut(BaseModel):
    """A workflow spec as listed; `errors` is non-empty (and the rest may be null) when it cannot run."""

    name: str
    file: str
    usable: bool
    errors: list[str]
    version: int | None = None
    description: str | None = None
    fields: dict[str, dict[str, Any]] | None = None
    steps: list[StepOut] | None = None
    sink: SinkOut | None = None

    @classmethod
    def from_entry(cls, entry: WorkflowEntry) -> "WorkflowOut":
        listed = cls(name=entry.name, file=entry.file.name, usable=entry.usable, errors=list(entry.errors))
        spec = entry.spec
        if spec is None:
            return listed
        listed.version = spec.version
        listed.description = spec.description
        listed.fields = {n: f.model_dump(mode="json", exclude_none=True) for n, f in spec.schema_.fields.items()}
        listed.steps = [StepOut(name=n, use=s.use, params=s.params) for s, n in zip(spec.steps, spec.step_names())]
        listed.sink = SinkOut(dataset=spec.sink.dataset, export_csv=spec.sink.export_csv)
        return listed


class AugmentRequest(BaseModel):
    """Records to augment. Each is validated like a row of the batch source; any JSON value is
    accepted here so that a record that is not an object comes back in `invalid` with its reason."""

    model_config = ConfigDict(extra="forbid")

    records: list[Any] = Field(min_length=1, max_length=MAX_RECORDS)


class Counts(BaseModel):
    in_: int = Field(serialization_alias="in")
    valid: int
    quarantined: int


class FieldError(BaseModel):
    field: str | None
    reason: str


class InvalidRecord(BaseModel):
    index: int = Field(description="Position of the record in the request, from 0.")
    errors: list[FieldError]


class AugmentResponse(BaseModel):
    workflow: str
    version: int
    counts: Counts
    records: list[dict[str, Any]] = Field(description="The valid records, augmented, in request order.")
    invalid: list[InvalidRecord]


class RunStepOut(BaseModel):
    name: str
    state: str
    rows: int
    started_at: str | None
    finished_at: str | None
    error: str | None

    @classmethod
    def from_state(cls, step: StepState) -> "RunStepOut":
        return cls(**step.model_dump())


class DatasetVersionOut(BaseModel):
    dataset: str
    version: int
    path: str
    columns: dict[str, str] = Field(description="Column name -> Arrow type.")
    row_count: int
    run_id: str
    created_at: dt.datetime
    imported_from: str | None = Field(default=None, description="The file(s) `augment import` read; null for a run.")

    @classmethod
    def from_version(cls, version: DatasetVersion) -> "DatasetVersionOut":
        return cls(**version.model_dump(exclude={"schema_"}), columns=version.schema_)


class RunOut(BaseModel):
    id: str
    workflow: str
    workflow_version: int
    spec_path: str
    status: str
    counts: dict[str, int]
    steps: list[RunStepOut]
    error: str | None
    output: dict[str, Any]
    cost: dict[str, Any] | None = Field(
        default=None, description="Provider cost: total_usd, budget_usd, budget_exhausted and usage per step."
    )
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_seconds: float | None

    @classmethod
    def from_record(cls, record: RunRecord) -> "RunOut":
        data = record.model_dump(exclude={"heartbeat_at", "steps"})
        steps = [RunStepOut.from_state(s) for s in record.steps]
        return cls(**data, steps=steps, duration_seconds=record.duration_seconds)


class ReviewItemOut(BaseModel):
    """One field of one record awaiting (or past) a person's decision."""

    id: int
    run_id: str
    workflow: str
    dataset: str
    version: int = Field(description="The dataset version the run wrote.")
    record_uuid: str
    field: str
    step: str
    reason: str = Field(description="Why the record went to review (the rule that matched).")
    before: Any = Field(description="The value in the previous version, or null.")
    after: Any = Field(description="The proposed value.")
    provenance: dict[str, Any] | None
    state: Literal["pending", "accepted", "edited", "rejected"]
    decided_value: Any
    decided_at: dt.datetime | None
    decided_by: str | None = Field(default=None, description="The user who decided it.")
    created_at: dt.datetime


class ReviewPage(BaseModel):
    items: list[ReviewItemOut]
    total: int = Field(description="Items matching the filters, over all pages.")
    limit: int
    offset: int


class ReviewEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: Any = Field(description="The value to keep instead of the proposal, of the field's type.")


class CallerOut(BaseModel):
    user: str
    role: Literal["viewer", "operator", "admin"]
    via: Literal["key", "session", "local"]
    key_prefix: str | None = Field(description="The API key's public start, when the caller used one.")


class AuditEntryOut(BaseModel):
    """One state-changing action: who, when, what and how it ended."""

    id: int
    at: dt.datetime
    actor: str = Field(description="The user and how they came: 'ana (key aug_1a2b3c4d)', 'ana (session)'.")
    action: str
    target: str
    outcome: Literal["ok", "refused", "failed"]
    detail: str | None
