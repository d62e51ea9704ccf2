"""The `api` Serve application: the HTTP API (health, workflows, online augment, runs).

The FastAPI app is built inside each replica, from settings read there: the cluster's
processes inherit the AUGMENT_* environment of `augment cluster up` (or of the RayService pod).
"""

from __future__ import annotations

import sys
from typing import Any, cast

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application, Deployment

from actors.alert_watcher import ensure_watchers
from augment_core.logs import configure_logging
from augment_core.settings import Settings
from serve_apps.api_v1.app import create_app
from serve_apps.gateway.replica import REPLICA_HEADER, NameReplica

# How long a thread of the replica holds the interpreter before another may take it (Python's
# default: 5 ms). An online augment works in a thread of the pool while the event loop threads
# (Serve's and the app's) take requests in and answers out; each of their steps waited up to the
# whole interval for the augmenting thread, so at 100 requests/s a request spent more time waiting
# for the interpreter than being worked on (docs/benchmarks.md, "Speed round, part 3").
SWITCH_INTERVAL_S = 0.0005


class ApiArgs(BaseModel):
    """Application args from the Serve config; unknown keys fail the deploy."""

    model_config = ConfigDict(extra="forbid")

    workflows_dir: str | None = Field(
        default=None, description="Serve the specs of this folder instead of AUGMENT_WORKFLOWS_DIR."
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Larger request bodies are refused with 413."
    )
    replica_header: bool = Field(
        default=False, description=f"Name the replica that answered in {REPLICA_HEADER} (to see how load spreads)."
    )


@serve.deployment(num_replicas=1, max_ongoing_requests=32, ray_actor_options={"num_cpus": 0.2})
@serve.ingress()
class AugmentApi:
    """Stateless apart from caches, so it scales out with replicas."""

    def __init__(self, args: ApiArgs) -> None:
        self.settings = Settings(workflows_dir=args.workflows_dir) if args.workflows_dir else Settings()
        configure_logging(self.settings.log_format)
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        # What this app reads of runs is true only while someone fails the runs whose driver died:
        # the cluster's reaper, started here too for a cluster where no run was launched since it came up.
        ensure_watchers(self.settings)
        self.max_body_bytes = args.max_body_bytes
        self.replica_header = args.replica_header

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = create_app(self.settings, self.max_body_bytes)
        if self.replica_header:
            replica = serve.get_replica_context().replica_id.unique_id
            app.add_middleware(NameReplica, replica=replica)
        return app


def build_app(args: dict[str, Any]) -> Application:
    # The decorators made the class a Deployment (mypy does not apply class decorators).
    return cast(Deployment, AugmentApi).bind(ApiArgs.model_validate(args))
