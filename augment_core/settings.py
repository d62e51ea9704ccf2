"""One settings object, read from AUGMENT_* environment variables and passed explicitly."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    stale_after_seconds: float = Field(
        default=30.0, gt=0, description="A running run without a heartbeat for this long is failed."
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
        return self

    def exported(self) -> dict[str, str]:
        """The settings as AUGMENT_* variables, for processes started on our behalf."""
        env = {f"AUGMENT_{k.upper()}": str(v) for k, v in self.model_dump().items() if v is not None}
        return env
