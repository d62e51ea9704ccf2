"""Request and response bodies of the API, kept apart from the store's and spec's models."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from augment_core.identity import MAX_DAILY_SPEND_USD, MIN_PASSWORD, USER_NAME, ApiKey, Role, User
from augment_core.store import DatasetVersion, RunRecord, StepState
from pipelines.workflows.folder import WorkflowEntry
from serve_apps.gateway.redact import files_by_name, hide_paths, public_path

MAX_RECORDS = 1000
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # a workflow's name
RoleName = Literal["viewer", "operator", "admin"]


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

    def without_paths(self) -> "WorkflowOut":
        """As viewers see it: files a step reads (a lookup's reference table) by name, no absolute
        path in the errors."""
        steps = [s.model_copy(update={"params": files_by_name(s.params)}) for s in self.steps or []]
        return self.model_copy(update={"errors": [hide_paths(e) or "" for e in self.errors],
                                       "steps": steps if self.steps is not None else None})


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


class SpendOut(BaseModel):
    """What this request's provider calls cost, against the caller's daily cap."""

    request_usd: float = Field(description="The cost of this request's provider calls.")
    cap_usd: float = Field(description="The caller's cap per UTC day (the key's own, or the gateway's default).")
    cap_reached: bool = Field(description="A call was refused by the cap: its records are 'skipped: budget'.")


class AugmentResponse(BaseModel):
    workflow: str
    version: int
    counts: Counts
    records: list[dict[str, Any]] = Field(description="The valid records, augmented, in request order.")
    invalid: list[InvalidRecord]
    spend: SpendOut


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

    def without_paths(self, storage_root: str) -> "DatasetVersionOut":
        """As viewers see it (serve_apps/gateway/redact.py)."""
        return self.model_copy(update={"path": public_path(self.path, storage_root),
                                       "imported_from": hide_paths(self.imported_from)})


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


class RunStart(BaseModel):
    """A run of a workflow of the API's workflows folder, by its name."""

    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(pattern=NAME, description="The workflow's `name` (see GET /v1/workflows).")


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
    role: RoleName
    via: Literal["key", "session"]
    key_prefix: str | None = Field(description="The API key's public start, when the caller used one.")


class UserOut(BaseModel):
    name: str
    role: RoleName
    disabled: bool
    has_password: bool = Field(description="False for a user who uses API keys only.")
    created_at: dt.datetime

    @classmethod
    def from_user(cls, user: User) -> "UserOut":
        return cls(**user.model_dump())


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=USER_NAME.pattern, description="1-100 letters, digits and . _ @ -")
    role: Role = Role.viewer
    password: SecretStr | None = Field(default=None, min_length=MIN_PASSWORD, max_length=1000,
                                       description="Omit for a user who signs in with API keys only.")


class RoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role


class KeyOut(BaseModel):
    """A key as listed: never its secret."""

    prefix: str
    user: str
    name: str
    state: Literal["active", "revoked", "expired"]
    rate_per_minute: int | None = Field(description="Its own request rate; null: the gateway's default.")
    daily_spend_usd: float | None = Field(description="Its own provider spend cap per UTC day; null: the default.")
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @classmethod
    def from_key(cls, key: ApiKey) -> "KeyOut":
        return cls(**key.model_dump(), state=key.state)


class KeyCreate(BaseModel):
    """A new key. Only admins name another user or set the key's own rate or spend cap."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="What the key is for, e.g. 'crm sync'.")
    user: str | None = Field(default=None, pattern=USER_NAME.pattern, description="Whose key; default: the caller.")
    days: int | None = Field(default=None, ge=1, le=3650, description="Expire after this many days; default: never.")
    rate_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    daily_spend_usd: float | None = Field(default=None, ge=0, le=MAX_DAILY_SPEND_USD)


class KeyCreated(BaseModel):
    key: KeyOut
    secret: str = Field(description="The key itself: shown this once, stored nowhere (only its hash is kept).")


class AuditEntryOut(BaseModel):
    """One state-changing action: who, when, what and how it ended."""

    id: int
    at: dt.datetime
    actor: str = Field(description="The user and how they came: 'ana (key aug_1a2b3c4d)', 'ana (session)'.")
    action: str
    target: str
    outcome: Literal["ok", "refused", "failed"]
    detail: str | None
