"""The metadata store: runs and the dataset catalog, on SQLite (default) or PostgreSQL.

Same code for both through SQLAlchemy Core. The run coordinator is the only writer of a live
run's row, and only while it is live: once a run has ended (reaped, cancelled) its writers are told
so (RunEnded). The cluster's reaper (actors/reaper.py) fails runs whose heartbeat stopped, so that
no run stays 'running' forever; readers never write.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from augment_core.settings import Settings

RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{8}")  # a whole run id (actors/runs.new_run_id), not a prefix
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
LIVE_STATUSES = ("pending", "running")
COUNT_NAMES = ("in", "valid", "quarantined", "augmented", "failed", "skipped")
CONNECT_TIMEOUT_SECONDS = 10  # PostgreSQL: how long connecting to the store may take
# PostgreSQL: how long one statement of the store may run. Every statement of ours is short; one
# stuck behind a lock (or a pathological query) fails instead of holding a worker for ever.
STATEMENT_TIMEOUT_SECONDS = 60.0
QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE of a statement cut by statement_timeout
T = TypeVar("T")
log = logging.getLogger(__name__)

metadata = sa.MetaData()

runs_table = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workflow", sa.String(200), nullable=False, index=True),
    sa.Column("workflow_version", sa.Integer, nullable=False),
    sa.Column("spec_path", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("steps", sa.JSON, nullable=False),
    sa.Column("counts", sa.JSON, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("output", sa.JSON, nullable=False),
    sa.Column("cost", sa.JSON),
    sa.Column("spec", sa.JSON),  # the spec as it ran (no secrets: specs name variables): what resume runs
    sa.Column("resumes", sa.Integer),  # how many times `augment resume` carried it on
    sa.Column("input", sa.JSON),  # the input's fingerprint (files, sizes, times; a version): resume checks it
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
)

dataset_versions_table = sa.Table(
    "dataset_versions",
    metadata,
    sa.Column("dataset", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("schema", sa.JSON, nullable=False),
    sa.Column("row_count", sa.BigInteger, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("imported_from", sa.Text),  # the file(s) `augment import` read; null for a run's output
    # True while the run that wrote it has not succeeded: its number is taken, its folder is
    # refused to other writers, but readers do not see it (finish_run publishes it with the run).
    sa.Column("pending", sa.Boolean),
)

# Review (queries in augment_core/reviews.py): one item per record and field a run proposed, and
# the human decisions (accepted or edited values) that later runs of the workflow must keep.
review_items_table = sa.Table(
    "review_items",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("workflow", sa.String(200), nullable=False),
    sa.Column("dataset", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("record_uuid", sa.String(64), nullable=False),
    sa.Column("field", sa.String(200), nullable=False),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("before", sa.JSON),
    sa.Column("after", sa.JSON),
    sa.Column("provenance", sa.JSON),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("decided_value", sa.JSON),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.Column("decided_by", sa.String(200)),  # the user who decided it (null for items decided before the gateway)
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_review_items_dataset_record", "dataset", "record_uuid"),
)

review_decisions_table = sa.Table(
    "review_decisions",
    metadata,
    sa.Column("workflow", sa.String(200), primary_key=True),
    sa.Column("record_uuid", sa.String(64), primary_key=True),
    sa.Column("field", sa.String(200), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # accepted | edited
    sa.Column("value", sa.JSON),
    sa.Column("item_id", sa.BigInteger, nullable=False),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
)


# The gateway (queries in augment_core/identity.py and augment_core/audit.py): users with one
# role each, their API keys and login sessions (stored as hashes only), and the audit log.
users_table = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.Text),  # argon2id; null for a user who signs in with keys only
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

api_keys_table = sa.Table(
    "api_keys",
    metadata,
    sa.Column("prefix", sa.String(32), primary_key=True),  # the key's public start, shown in lists
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),  # sha256 of the whole key
    sa.Column("user_name", sa.String(100), nullable=False, index=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("rate_per_minute", sa.Integer),  # null: the gateway's default
    sa.Column("daily_spend_usd", sa.Float),  # provider spend per UTC day; null: the gateway's default
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("last_used_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)

sessions_table = sa.Table(
    "sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),  # sha256 of the cookie's value
    sa.Column("user_name", sa.String(100), nullable=False, index=True),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

workflow_versions_table = sa.Table(
    "workflow_versions",
    metadata,
    sa.Column("workflow", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("file", sa.String(300), nullable=False),  # its file's name in the workflows folder
    sa.Column("text", sa.Text, nullable=False),  # the YAML exactly as saved
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("author", sa.String(200), nullable=False),  # "ana (session)", or "the workflows folder"
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

alert_rules_table = sa.Table(
    "alert_rules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("threshold", sa.Float),
    sa.Column("minutes", sa.Float),
    sa.Column("workflow", sa.String(200)),  # runs of this workflow only; all when null
    sa.Column("webhook_env", sa.String(100)),  # the variable holding the webhook's URL, never the URL
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

alerts_table = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rule_id", sa.Integer, nullable=False, index=True),
    sa.Column("rule", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),  # "run <id>", "provider <account>", "group <name>"
    sa.Column("run_id", sa.String(64)),
    sa.Column("state", sa.String(16), nullable=False, index=True),  # firing | resolved
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    sa.Column("resolved_by", sa.String(200)),  # "the condition cleared", or who marked it
    sa.Column("delivery", sa.Text),  # what the webhook answered, if the rule has one
    # "<rule_id>:<subject>" while firing, null once resolved: one open alert per rule and subject
    sa.Column("open_key", sa.String(320), unique=True),
)

audit_table = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=False, index=True),  # user, and how: "ana (key aug_1a2b)"
    sa.Column("action", sa.String(64), nullable=False, index=True),
    sa.Column("target", sa.String(300), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # ok | refused | failed
    sa.Column("detail", sa.Text),
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands datetimes back without a zone; everything we store is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.timezone.utc)


class StepState(BaseModel):
    name: str
    state: str = "pending"  # pending | running | succeeded | failed | cancelled
    rows: int = 0
    failed: int = 0  # records the step left in error
    skipped: int = 0  # records the step skipped (budget, an empty input)
    # The step's work time summed over every worker and batch: what it cost, next to the wall-clock
    # span from started_at to finished_at, which the steps of one fused Ray Data stage share.
    seconds: float = 0.0
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None

    @property
    def work(self) -> str:
        """The work time as people read it: '41 ms' below a second (a small run's steps take
        milliseconds), '3.1 s' above; '' before any is measured."""
        if not self.seconds:
            return ""
        return f"{self.seconds * 1000:.0f} ms" if self.seconds < 1 else f"{self.seconds:.1f} s"


class RunRecord(BaseModel):
    """A run as the CLI, the API and the panels read it."""

    id: str
    workflow: str
    workflow_version: int
    spec_path: str
    status: str
    steps: list[StepState]
    counts: dict[str, int]
    error: str | None = None
    output: dict[str, Any] = Field(default_factory=dict)
    cost: dict[str, Any] | None = None  # provider calls: total and per step, with the budget
    spec: dict[str, Any] | None = None
    resumes: int | None = None
    input: dict[str, Any] | None = None
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    heartbeat_at: dt.datetime | None = None

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or utcnow()
        return round((end - self.started_at).total_seconds(), 3)

    @property
    def dataset(self) -> str:
        """The dataset its output goes to: as recorded, else its spec's sink, else its workflow's name."""
        sink = (self.spec or {}).get("sink") or {}
        return str(self.output.get("dataset") or sink.get("dataset") or self.workflow)


class DatasetVersion(BaseModel):
    dataset: str
    version: int
    path: str
    schema_: dict[str, str] = Field(alias="schema")
    row_count: int
    run_id: str
    created_at: dt.datetime
    imported_from: str | None = None

    model_config = {"populate_by_name": True}


def postgres_connect_args(url: str, statement_timeout_seconds: float = STATEMENT_TIMEOUT_SECONDS) -> dict[str, Any]:
    """libpq's connect arguments of the store: a bounded connect and statement_timeout, the
    latter added to the URL's own `options` (an argument given here replaces the URL's)."""
    own = sa.engine.make_url(url).query.get("options", "")
    own = " ".join(own) if isinstance(own, tuple) else own
    timeout = f"-c statement_timeout={max(1, round(statement_timeout_seconds * 1000))}"
    return {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "options": f"{own} {timeout}".strip()}


def engine_url(database_url: str) -> str:
    """Route plain PostgreSQL URLs to psycopg 3, the driver we ship."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix):]
    return database_url


class MetadataStore:
    """Runs and dataset versions. Safe to share between threads of one process."""

    def __init__(self, database_url: str) -> None:
        url = engine_url(database_url)
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url, connect_args={"timeout": 30})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            # pre_ping replaces connections a server restart killed; connect_timeout bounds a dead
            # host, statement_timeout a statement stuck behind a lock or a runaway query.
            self.engine = sa.create_engine(url, pool_pre_ping=True, connect_args=postgres_connect_args(url))
        try:
            metadata.create_all(self.engine)
        except sa.exc.DBAPIError:
            # Another process (a Serve replica, a job) created the tables at the same moment.
            metadata.create_all(self.engine)
        add_missing_columns(self.engine)

    # runs -----------------------------------------------------------------------------------
    def create_run(
        self, run_id: str, workflow: str, workflow_version: int, spec_path: str, steps: list[str],
        spec: dict[str, Any] | None = None,
    ) -> RunRecord:
        row = {
            "id": run_id,
            "workflow": workflow,
            "workflow_version": workflow_version,
            "spec_path": spec_path,
            "spec": spec,
            "status": "pending",
            "steps": [StepState(name=s).model_dump() for s in steps],
            "counts": {name: 0 for name in COUNT_NAMES},
            "output": {},
            "created_at": utcnow(),
        }
        with self.engine.begin() as conn:
            conn.execute(runs_table.insert().values(**row))
        return self.get_run(run_id)

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Write fields of a live (pending or running) run: heartbeats, progress, its input.
        RunEnded once it has ended, so that a late write never changes a reaped or cancelled
        run; KeyError if there is no such run."""
        if "steps" in fields:
            fields["steps"] = [StepState.model_validate(s).model_dump() for s in fields["steps"]]
        with self.engine.begin() as conn:
            _write_live_run(conn, run_id, **fields)

    def mark_running(self, run_id: str) -> bool:
        """Move a pending run to running; False if it already ended (reaped, or its driver
        gave up on it), so that a late coordinator never brings a final run back to life."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                runs_table.update()
                .where(runs_table.c.id == run_id, runs_table.c.status == "pending")
                .values(status="running", started_at=now, heartbeat_at=now)
            )
        return result.rowcount == 1

    def reopen_run(self, run_id: str, steps: list[dict[str, Any]]) -> bool:
        """Bring a failed or cancelled run back to pending, to be carried on by `augment resume`;
        False if it is not in one of those states (a run that succeeded stays as it is)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                runs_table.update()
                .where(runs_table.c.id == run_id, runs_table.c.status.in_(("failed", "cancelled")))
                .values(status="pending", error=None, finished_at=None, heartbeat_at=utcnow(), steps=steps,
                        resumes=sa.func.coalesce(runs_table.c.resumes, 0) + 1)
            )
        return result.rowcount == 1

    def finish_run(
        self, run_id: str, status: str, *, error: str | None = None, publish: tuple[str, int] | None = None,
        **fields: Any,
    ) -> bool:
        """Move a run to a final status once; returns False if it had already ended. `publish`
        (dataset, version): the version the run reserved, made visible in the same transaction,
        so that a version is catalogued exactly when its run succeeded."""
        assert status in FINAL_STATUSES, status
        assert publish is None or status == "succeeded", "only a run that succeeded publishes its version"
        with self.engine.begin() as conn:
            result = conn.execute(
                runs_table.update()
                .where(runs_table.c.id == run_id, runs_table.c.status.in_(LIVE_STATUSES))
                .values(**{"finished_at": utcnow(), **fields, "status": status, "error": error})
            )
            if result.rowcount == 1 and publish is not None:
                _publish_version(conn, run_id, *publish)
            elif result.rowcount == 1 and status != "succeeded":
                withdraw_review_items(conn, run_id)
        return result.rowcount == 1

    def withdraw_review_items(self, run_id: str) -> None:
        """The undecided review items of a run that ended without its version (see finish_run)."""
        with self.engine.begin() as conn:
            withdraw_review_items(conn, run_id)

    def get_run(self, run_id: str) -> RunRecord:
        with self.engine.connect() as conn:
            row = conn.execute(runs_table.select().where(runs_table.c.id == run_id)).mappings().first()
        if row is None:
            raise KeyError(f"no run {run_id!r}")
        return _run_record(row)

    def find_run(self, prefix: str) -> RunRecord:
        """A run by its id or an unambiguous prefix of it."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                runs_table.select().where(runs_table.c.id.startswith(prefix, autoescape=True)).limit(2)
            ).mappings().all()
        if not rows:
            raise KeyError(f"no run {prefix!r}")
        if len(rows) > 1:
            raise KeyError(f"run id prefix {prefix!r} is ambiguous")
        return _run_record(rows[0])

    def list_runs(self, limit: int = 50, workflow: str | None = None, status: str | None = None,
                  since: dt.datetime | None = None) -> list[RunRecord]:
        """The newest runs first, of one workflow, in one status, created at or after `since`."""
        query = runs_table.select().order_by(runs_table.c.created_at.desc()).limit(limit)
        if workflow:
            query = query.where(runs_table.c.workflow == workflow)
        if status:
            query = query.where(runs_table.c.status == status)
        if since is not None:
            query = query.where(runs_table.c.created_at >= since)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_run_record(r) for r in rows]

    def reap_stale_runs(self, stale_after_seconds: float) -> list[str]:
        """Fail runs whose coordinator stopped beating: their driver is gone. Called by the
        cluster's reaper on a timer (actors/reaper.py) and by reap_once_without_a_cluster, never by
        a reader. Returns the ids of the runs it failed."""
        cutoff = utcnow() - dt.timedelta(seconds=stale_after_seconds)
        # Both conditions again in each UPDATE: a beat (or a catalogue write) that lands between the
        # SELECT and the UPDATE keeps its run alive (PostgreSQL re-checks them on the locked row).
        stale = (runs_table.c.status.in_(LIVE_STATUSES),
                 sa.func.coalesce(runs_table.c.heartbeat_at, runs_table.c.created_at) < cutoff)
        reaped = []
        with self.engine.begin() as conn:
            for run_id in conn.execute(sa.select(runs_table.c.id).where(*stale)).scalars().all():
                result = conn.execute(
                    runs_table.update()
                    .where(runs_table.c.id == run_id, *stale)
                    .values(
                        status="failed",
                        finished_at=utcnow(),
                        error=f"driver lost: no heartbeat for more than {stale_after_seconds:g}s",
                    )
                )
                if result.rowcount == 1:
                    withdraw_review_items(conn, run_id)
                    reaped.append(run_id)
        return reaped

    # datasets -------------------------------------------------------------------------------
    def next_dataset_version(self, dataset: str) -> int:
        """The number after every version, pending ones included (their numbers are taken)."""
        with self.engine.connect() as conn:
            return _next_version(conn, dataset)

    def add_dataset_version(
        self, dataset: str, version: int, path: str, schema: dict[str, str], row_count: int, run_id: str,
        imported_from: str | None = None,
    ) -> DatasetVersion:
        """Catalog a written version. Raises VersionTaken if another run claimed the number, and
        PathCatalogued if the path holds (or overlaps) a catalogued version: versions are immutable."""
        row = dict(
            dataset=dataset, version=version, path=path, schema=schema,
            row_count=row_count, run_id=run_id, created_at=utcnow(), imported_from=imported_from,
        )
        try:
            with self.engine.begin() as conn:
                _refuse_catalogued(conn, path)
                conn.execute(dataset_versions_table.insert().values(**row))
        except IntegrityError as exc:
            raise VersionTaken(f"{dataset} v{version} already exists") from exc
        return DatasetVersion(**row)

    def add_next_dataset_version(
        self, dataset: str, path: str, schema: dict[str, str], row_count: int, run_id: str,
        imported_from: str | None = None, tries: int = 5,
    ) -> DatasetVersion:
        """Catalog a written version under the next free number, retrying when a concurrent
        writer claims it first. Safe to repeat: a try whose commit landed but whose reply was
        lost left its entry (same run, same path), which is returned."""
        with self.engine.connect() as conn:
            existing = conn.execute(dataset_versions_table.select().where(
                dataset_versions_table.c.dataset == dataset, dataset_versions_table.c.run_id == run_id,
                dataset_versions_table.c.path == path,
            )).mappings().first()
        if existing is not None:
            return _version_record(existing)
        for _ in range(tries):
            try:
                return self.add_dataset_version(
                    dataset, self.next_dataset_version(dataset), path, schema, row_count, run_id, imported_from
                )
            except VersionTaken:
                continue
        raise RuntimeError(f"could not claim a version of {dataset} after {tries} tries")

    def reserve_run_version(
        self, dataset: str, path: str, schema: dict[str, str], row_count: int, run_id: str, tries: int = 5,
    ) -> DatasetVersion:
        """A live run's written folder as the next version of `dataset`, pending: its number and
        folder are taken, but readers see it only once finish_run publishes it with the run's
        success. RunEnded if the run has ended (reaped, cancelled): it must catalogue nothing.
        Safe to repeat: an earlier try or attempt of this run that reserved this folder keeps its
        number, with the count and schema brought up to date (a resume wrote more)."""
        for _ in range(tries):
            try:
                with self.engine.begin() as conn:
                    # First a write to the run's row: it holds the row (SQLite: the database) until
                    # the commit, so the run cannot be reaped or cancelled half-way through.
                    _write_live_run(conn, run_id, heartbeat_at=utcnow())
                    return _reserve(conn, dataset, path, schema, row_count, run_id)
            except IntegrityError:  # a concurrent writer claimed the number: the next one
                continue
        raise RuntimeError(f"could not claim a version of {dataset} after {tries} tries")

    def catalogued_version(self, path: str) -> DatasetVersion | None:
        """The catalogued (published) version at `path`, or over or under it; None if there is none."""
        with self.engine.connect() as conn:
            hit = _catalogued_at(conn, path, pending_of=None)
        return None if hit is None else _version_record(hit)

    def refuse_catalogued(self, path: str, run_id: str | None = None) -> None:
        """Raise PathCatalogued when writing to `path` could change a catalogued version, or the
        folder of another run's pending one (`run_id`'s own pending version is its to write)."""
        with self.engine.connect() as conn:
            _refuse_catalogued(conn, path, pending_of=run_id)

    def list_dataset_versions(self, dataset: str | None = None) -> list[DatasetVersion]:
        query = dataset_versions_table.select().where(_published).order_by(
            dataset_versions_table.c.dataset, dataset_versions_table.c.version
        )
        if dataset:
            query = query.where(dataset_versions_table.c.dataset == dataset)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_version_record(r) for r in rows]


    def get_dataset_version(self, dataset: str, version: int) -> DatasetVersion:
        """One catalogued version; KeyError naming the versions there are when it does not exist."""
        for entry in self.list_dataset_versions(dataset):
            if entry.version == version:
                return entry
        known = [v.version for v in self.list_dataset_versions(dataset)]
        if not known:
            raise KeyError(f"no dataset {dataset!r}")
        raise KeyError(f"{dataset} has no version {version} (versions: {', '.join(map(str, known))})")


def insert_ignoring(engine: sa.Engine, table: sa.Table, keys: list[str]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO NOTHING, in the engine's dialect (PostgreSQL or SQLite)."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=keys)


class VersionTaken(Exception):
    """Two runs raced for the same dataset version number."""


class RunEnded(Exception):
    """A write for a run that has already ended (reaped, cancelled, stopped): its writer lost the
    run, and the stored outcome stands."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"run {run_id} already ended ({status}): its stored outcome stands")
        self.run_id, self.status = run_id, status


def _write_live_run(conn: sa.Connection, run_id: str, **fields: Any) -> None:
    """UPDATE a run's row only while it is pending or running; RunEnded or KeyError otherwise."""
    result = conn.execute(
        runs_table.update().where(runs_table.c.id == run_id, runs_table.c.status.in_(LIVE_STATUSES)).values(**fields)
    )
    if result.rowcount == 1:
        return
    status = conn.execute(sa.select(runs_table.c.status).where(runs_table.c.id == run_id)).scalar()
    if status is None:
        raise KeyError(f"no run {run_id!r}")
    raise RunEnded(run_id, status)


# A version readers see: published (pending is null; False is never written but reads the same).
_published = sa.func.coalesce(dataset_versions_table.c.pending, sa.false()) == sa.false()


def _next_version(conn: sa.Connection, dataset: str) -> int:
    table = dataset_versions_table
    latest = conn.execute(sa.select(sa.func.max(table.c.version)).where(table.c.dataset == dataset)).scalar()
    return int(latest or 0) + 1


def _reserve(
    conn: sa.Connection, dataset: str, path: str, schema: dict[str, str], row_count: int, run_id: str
) -> DatasetVersion:
    """Inside reserve_run_version's transaction: this run's entry for the folder, or a new pending one."""
    table = dataset_versions_table
    mine = (table.c.dataset == dataset, table.c.run_id == run_id, table.c.path == path)
    existing = conn.execute(table.select().where(*mine)).mappings().first()
    if existing is not None and existing["pending"]:
        conn.execute(table.update().where(*mine).values(schema=schema, row_count=row_count))
        existing = conn.execute(table.select().where(*mine)).mappings().first()
    if existing is not None:  # (published: an attempt from before versions were reserved)
        return _version_record(existing)
    _drop_abandoned(conn, dataset, path)
    _refuse_catalogued(conn, path, pending_of=run_id)
    row = dict(dataset=dataset, version=_next_version(conn, dataset), path=path, schema=schema,
               row_count=row_count, run_id=run_id, created_at=utcnow(), imported_from=None, pending=True)
    conn.execute(table.insert().values(**row))
    return _version_record(row)


def withdraw_review_items(conn: sa.Connection, run_id: str) -> None:
    """Remove the undecided review items of a run that ends without publishing its version (it
    wrote them, then failed, was cancelled or reaped): nobody should review values that no
    catalogued version holds. Decided items stay, as history."""
    table = review_items_table
    conn.execute(table.delete().where(table.c.run_id == run_id, table.c.state == "pending"))


def _drop_abandoned(conn: sa.Connection, dataset: str, path: str) -> None:
    """Forget the pending versions of this folder whose run ended without publishing them (it was
    reaped or cancelled after reserving): a later run that writes on into the folder (a stream's
    next start) reserves it anew, under a number of its own."""
    table = dataset_versions_table
    ended = sa.select(runs_table.c.id).where(runs_table.c.status.in_(FINAL_STATUSES))
    conn.execute(table.delete().where(
        table.c.dataset == dataset, table.c.path == path, table.c.pending.is_(True), table.c.run_id.in_(ended)))


def _publish_version(conn: sa.Connection, run_id: str, dataset: str, version: int) -> None:
    table = dataset_versions_table
    result = conn.execute(table.update().where(
        table.c.dataset == dataset, table.c.version == version, table.c.run_id == run_id).values(pending=None))
    if result.rowcount != 1:  # rolls the run's final state back with it
        raise KeyError(f"run {run_id} reserved no version {version} of {dataset}")


def is_disconnect(exc: BaseException) -> bool:
    """Whether a database error means the server could not be reached (down, restarting, the
    connection dropped) rather than a fault of the statement: such a write is worth retrying."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if getattr(getattr(exc, "orig", None), "sqlstate", None) == QUERY_CANCELED:
        return False  # statement_timeout: the statement's fault, an OperationalError all the same
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))


def durably(write: Callable[[], T], what: str, deadline_s: float) -> T:
    """Call `write` until the database takes it, retrying while it cannot be reached, for up to
    deadline_s (Settings.durable_write_window: shorter than the stale-run window, so that a run
    waiting here is not reaped); other errors, and the last one at the deadline, propagate.
    `write` must be safe to repeat: a commit whose reply was lost may have landed."""
    deadline = time.monotonic() + deadline_s
    pause = 0.5
    while True:
        try:
            return write()
        except sa.exc.DBAPIError as exc:
            if not is_disconnect(exc) or time.monotonic() + pause > deadline:
                raise
            log.warning("%s: database unreachable, retrying in %.1fs: %s", what, pause, describe_db_error(exc))
        time.sleep(pause)
        pause = min(pause * 2, 5.0)


def describe_db_error(exc: BaseException) -> str:
    """The driver's first line, without SQLAlchemy's statement and parameters (record data)."""
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return f"{type(original).__name__}: {lines[0] if lines else ''}"


class PathCatalogued(Exception):
    """A write aimed at a path that holds a catalogued (hence immutable) dataset version."""


def _catalogued_at(conn: sa.Connection, path: str, pending_of: str | None) -> sa.RowMapping | None:
    """A version at the path itself, a folder above it, or one inside it: any of them would be
    touched by writing there. Published versions, and with `pending_of` the pending ones of
    other runs too (they will be published)."""
    path = path.rstrip("/")
    scheme, sep, rest = path.rpartition("://")
    parts = rest.split("/")
    above = [scheme + sep + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    table = dataset_versions_table
    whose = _published if pending_of is None else sa.or_(_published, table.c.run_id != pending_of)
    return conn.execute(
        table.select()
        .where(sa.or_(table.c.path.in_(above), table.c.path.startswith(path + "/", autoescape=True)), whose)
        .limit(1)
    ).mappings().first()


def _refuse_catalogued(conn: sa.Connection, path: str, pending_of: str | None = None) -> None:
    hit = _catalogued_at(conn, path, pending_of="" if pending_of is None else pending_of)
    if hit is not None:
        raise PathCatalogued(
            f"{path} would overwrite {hit['dataset']} v{hit['version']} at {hit['path']}:"
            " catalogued dataset versions are immutable"
        )


def _run_record(row: sa.RowMapping) -> RunRecord:
    data = dict(row)
    for key in ("created_at", "started_at", "finished_at", "heartbeat_at"):
        data[key] = aware(data[key])
    return RunRecord(**data)


def _version_record(row: sa.RowMapping | dict[str, Any]) -> DatasetVersion:
    return DatasetVersion(**{**row, "created_at": aware(row["created_at"])})


def add_missing_columns(engine: sa.Engine, tables: tuple[sa.Table, ...] | None = None) -> None:
    """Columns added to a table after a database was created (create_all does not alter tables).
    Only nullable columns are ever added, so old rows stay valid."""
    inspector = sa.inspect(engine)
    for table in tables or (runs_table, dataset_versions_table, review_items_table, api_keys_table):
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                kind = column.type.compile(dialect=engine.dialect)
                try:
                    with engine.begin() as conn:
                        conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
                except sa.exc.DBAPIError:  # added by another process meanwhile
                    pass


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the CLI, the coordinator and Serve replicas read while one of them writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@functools.lru_cache(maxsize=8)
def _store_for(database_url: str) -> MetadataStore:
    return MetadataStore(database_url)


def open_store(settings: Settings) -> MetadataStore:
    """The process-wide store for these settings (one engine and pool per URL)."""
    return _store_for(settings.database_url)
