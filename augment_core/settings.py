"""One settings object, read from AUGMENT_* environment variables and passed explicitly."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_DURABLE_WRITE_SECONDS = 60.0  # the derived durable-write window never waits longer than this


class Settings(BaseSettings):
    """Where augment keeps its state. Relative paths are resolved against the working directory
    at load time, so every process of a run (driver, actors, Serve replicas) agrees on them once
    the absolute values are exported (see `cluster.local.cluster_env`)."""

    model_config = SettingsConfigDict(env_prefix="AUGMENT_", extra="ignore", frozen=True)

    storage_root: str = Field(
        default="data",
        description="Folder or s3://bucket/prefix where datasets, quarantine and exports live.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the metadata store; a SQLite file under ./data when empty.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="Endpoint of an S3-compatible store (MinIO, moto) when not AWS."
    )
    ray_address: str | None = Field(
        default=None, description="Ray cluster to join; a new local instance when unset."
    )
    workflows_dir: str = Field(default="configs/workflows")
    providers_file: str = Field(
        default="configs/providers.yaml", description="Providers that workflows name without declaring."
    )
    redis_url: str | None = Field(default=None, description="Redis for the result cache (and events).")
    cache_backend: str = Field(
        default="database", pattern="^(database|redis|off)$",
        description="Where provider results are cached: the metadata store, Redis, or nowhere.",
    )
    # The gateway (serve_apps/gateway): who may reach the API and panels, and how much.
    allowed_hosts: str = Field(
        default="127.0.0.1,localhost,[::1]",
        description="Host names the API and panels answer, comma-separated (any port); '*' for any.",
    )
    cors_origins: str = Field(
        default="",
        description="Other sites' origins whose pages may call the API with a key, comma-separated; none when empty.",
    )
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30, description="How long a login lasts.")
    cookie_secure: bool | None = Field(
        default=None, description="Send the session cookie only over https; unset: when the request came by https."
    )
    api_rate_per_minute: int = Field(
        default=600, ge=1, description="Requests per minute of each key (or user's sessions), over every replica."
    )
    api_burst: int = Field(default=30, ge=1, description="Requests a caller may send at once above that pace.")
    api_daily_spend_usd: float = Field(
        default=5.0, ge=0, le=1_000_000,
        description="Provider spend (USD) per key (or user's sessions) and UTC day on online calls and review"
                    " reruns, unless the key has its own cap; 0: no provider calls online.",
    )
    api_concurrency: int = Field(
        default=2, ge=1, le=64,
        description="Online augment calls of workflows without provider calls that one API replica works on at once"
                    " in its thread pool (calls of more than ON_LOOP_RECORDS, 16, records: serve_apps/api_v1/"
                    "workflows.py; smaller ones are worked on its event loop, one at a time).",
    )
    # 12: a call now costs ~1 ms on the loop (the row path), so 14 waiting clear in well under 100 ms,
    # and a stall of the machine at 100 calls/s no longer sheds calls the replica has room for (at
    # 4 it refused 3-4 of 6000; docs/benchmarks.md, "Speed round, part 9").
    api_queue: int = Field(
        default=12, ge=0, le=1024,
        description="Such calls that wait for one of those; a call beyond both is answered 503 with Retry-After.",
    )
    serve_ingress: str = Field(
        default="haproxy", pattern="^(proxy|haproxy)$",
        description="What takes HTTP requests into Serve on a cluster that `augment cluster up` starts: HAProxy"
                    " in front of replicas that listen themselves (Ray's direct ingress), or Ray's Python proxy,"
                    " which costs 20 times the CPU per request (docs/benchmarks.md).",
    )
    max_streams_per_caller: int = Field(default=8, ge=1, description="Event streams one key or user holds open.")
    stream_idle_seconds: float = Field(
        default=300.0, gt=0, description="An event stream with no event for this long is closed."
    )
    auth_cache_seconds: float = Field(
        default=2.0, ge=0, description="How long a replica trusts a key or session it checked (revocation delay)."
    )
    # Alerts (actors/alert_watcher.py): how often the time-based rules are judged, and which private
    # hosts a rule's webhook may reach (webhooks go only to public addresses otherwise).
    alert_interval_seconds: float = Field(default=15.0, gt=0, le=3600)
    alert_webhook_allow_hosts: str = Field(
        default="",
        description="Hosts (names or addresses) alert webhooks may reach although private, comma-separated.",
    )
    log_format: str = Field(
        default="text", pattern="^(text|json)$",
        description="How augment's processes log: lines of text, or one JSON object per line (augment_core/logs.py).",
    )
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    stale_after_seconds: float = Field(
        default=30.0, gt=0, description="A running run without a heartbeat for this long is failed."
    )
    durable_write_seconds: float | None = Field(
        default=None, gt=0,
        description="How long a write that must not be lost (a run's final state, its catalogue entry) waits"
        " for the database to come back; unset: stale_after_seconds - 2 x heartbeat_seconds, at most 60.",
    )
    # Retention (augment_core/retention.py): what `augment gc`, and the reaper every gc_interval_minutes,
    # remove. 0 keeps a kind for ever. Nothing a live run, a resumable run or an unread consumer needs goes.
    retention_event_days: float = Field(
        default=30.0, ge=0,
        description="Events of runs that ended this long ago (and cluster-wide stream entries this old) are removed.",
    )
    retention_stream_maxlen: int = Field(
        default=1_000_000, ge=0,
        description="Entries the cluster-wide Redis event stream keeps at most (never past one a group has not read).",
    )
    retention_cache_days: float = Field(
        default=90.0, ge=0, description="Result-cache entries not used for this long are removed.",
    )
    retention_cache_max_entries: int = Field(
        default=0, ge=0, description="Result-cache entries kept at most, the least recently used removed first.",
    )
    retention_resumable_days: float = Field(
        default=30.0, ge=0,
        description="How long a failed or cancelled run keeps the cached results it used (a resume then pays for"
                    " nothing twice); a live run keeps them while it lives.",
    )
    retention_dead_letter_days: float = Field(default=30.0, ge=0, description="Dead letters older than this go.")
    retention_audit_days: float = Field(default=365.0, ge=0, description="Audit entries older than this go.")
    gc_interval_minutes: float = Field(
        default=60.0, ge=0, description="How often the cluster's reaper runs `augment gc`'s retention; 0: never.",
    )

    @field_validator("storage_root", "workflows_dir", "providers_file")
    @classmethod
    def _absolute_local_path(cls, value: str) -> str:
        if "://" in value:
            return value.rstrip("/")
        return str(Path(value).expanduser().resolve())

    @model_validator(mode="after")
    def _default_database(self) -> "Settings":
        if self.cache_backend == "redis" and not self.redis_url:
            raise ValueError("AUGMENT_CACHE_BACKEND=redis needs AUGMENT_REDIS_URL")
        if not self.database_url:
            sqlite_path = Path("data/augment.db").resolve()
            object.__setattr__(self, "database_url", f"sqlite:///{sqlite_path}")
        self._check_run_windows()
        return self

    def _check_run_windows(self) -> None:
        """A live run is never reaped while it waits out a database restart: its writes give up
        (and fail the run) before the reaper could take its silence for a lost driver. The two
        heartbeats of margin are the one that missed and the one that lands once the database is back."""
        margin = 2 * self.heartbeat_seconds
        if self.stale_after_seconds <= margin:
            raise ValueError(
                f"AUGMENT_STALE_AFTER_SECONDS ({self.stale_after_seconds:g}) must exceed two heartbeats"
                f" (2 x AUGMENT_HEARTBEAT_SECONDS = {margin:g}): a live run would be reaped between its beats")
        if self.durable_write_seconds is not None and self.durable_write_seconds > self.stale_after_seconds - margin:
            raise ValueError(
                f"AUGMENT_DURABLE_WRITE_SECONDS ({self.durable_write_seconds:g}) must be at most"
                f" AUGMENT_STALE_AFTER_SECONDS - 2 x AUGMENT_HEARTBEAT_SECONDS"
                f" ({self.stale_after_seconds - margin:g}): a run waiting for the database would be reaped")

    @property
    def durable_write_window(self) -> float:
        """How long a write that must not be lost retries while the database is unreachable."""
        if self.durable_write_seconds is not None:
            return self.durable_write_seconds
        return min(MAX_DURABLE_WRITE_SECONDS, self.stale_after_seconds - 2 * self.heartbeat_seconds)

    @property
    def host_names(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip())

    @property
    def webhook_allow_list(self) -> list[str]:
        return [h.strip() for h in self.alert_webhook_allow_hosts.split(",") if h.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    def exported(self) -> dict[str, str]:
        """The settings as AUGMENT_* variables, for processes started on our behalf."""
        env = {f"AUGMENT_{k.upper()}": str(v) for k, v in self.model_dump().items() if v is not None}
        return env
