"""`augment serve`: load the Serve config under one route prefix, deploy it, wait until it runs.

Deployment goes through the dashboard's Serve REST API (what `serve deploy` does), so it works
against any cluster whose dashboard is reachable. No runtime_env is needed: the project is
installed in the environment the cluster runs from (and `serve deploy` rejects a local
working_dir anyway).
"""

from __future__ import annotations

import copy
import time
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from ray.dashboard.modules.serve.sdk import ServeSubmissionClient
from ray.serve.schema import ServeDeploySchema

from augment_core import serve_routes
from augment_core.serve_routes import is_panel, place_under_prefix
from pipelines.spec.errors import format_loc

POLL_SECONDS = 1.0


class ServeConfigError(Exception):
    """A Serve config that cannot be deployed; one 'path: reason' line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(f"  {e}" for e in errors))


class DeployError(Exception):
    """The cluster refused the config, or an application did not reach RUNNING."""


def normalise_prefix(prefix: str | None) -> str:
    """'' for no prefix, else '/a/b' (no trailing slash)."""
    try:
        return serve_routes.normalise_prefix(prefix)
    except ValueError as exc:
        raise ServeConfigError("--prefix", [str(exc)]) from None


def load_config(path: str | Path, prefix: str | None = None, port: int | None = None) -> dict[str, Any]:
    """The config file with every route under `prefix` and the HTTP port set, validated."""
    source = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ServeConfigError(source, [f"(file): cannot read: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ServeConfigError(source, [f"(file): invalid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise ServeConfigError(source, [f"(top level): expected a mapping, got {type(data).__name__}"])
    root = normalise_prefix(prefix)
    config = copy.deepcopy(data)
    bad_routes = place_under_prefix(config, root)
    if port is not None:
        config["http_options"] = {**(config.get("http_options") or {}), "port": port}
    if bad_routes:
        raise ServeConfigError(source, bad_routes)
    validate_config(config, source)
    return config


def single_replica_panels(config: dict[str, Any]) -> list[str]:
    """Every panel down to one replica, for Ray's Python proxy, which cannot keep a browser's
    session on one replica as HAProxy does (cluster/local.py); returns the applications changed."""
    changed = []
    for app in config.get("applications") or []:
        if not is_panel(app):
            continue
        for deployment in app.get("deployments") or []:
            if deployment.get("num_replicas", 1) != 1 or "autoscaling_config" in deployment:
                deployment.pop("autoscaling_config", None)
                deployment["num_replicas"] = 1
                changed.append(app["name"])
    return changed


def validate_config(config: dict[str, Any], source: str = "<config>") -> None:
    """ServeDeploySchema's checks, plus unknown keys (which the schema silently ignores)."""
    errors = unknown_keys(ServeDeploySchema, config)
    try:
        ServeDeploySchema.model_validate(config)
    except ValidationError as exc:
        errors += [f"{format_loc(tuple(e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
    if errors:
        raise ServeConfigError(source, errors)


def unknown_keys(model: type[BaseModel], data: Any, loc: tuple[Any, ...] = ()) -> list[str]:
    """Keys of `data` that no field of `model` (or of its nested models) declares."""
    if not isinstance(data, dict):
        return []
    errors = []
    known = {name: field for name, field in model.model_fields.items()}
    known.update({field.alias: field for field in model.model_fields.values() if field.alias})
    for key, value in data.items():
        field = known.get(key)
        if field is None:
            errors.append(f"{format_loc(loc + (key,))}: unknown key")
            continue
        nested = _model_in(field.annotation)
        if nested is None:
            continue
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            errors += unknown_keys(nested, item, loc + ((key, i) if i is not None else (key,)))
    return errors


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside Optional[...] / List[...] / Union[dict, Model], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _client(address: str) -> ServeSubmissionClient:
    try:
        return ServeSubmissionClient(address)
    except (OSError, RuntimeError, ValueError) as exc:
        raise DeployError(f"cannot reach the Ray dashboard at {address}: {exc}") from exc


def deploy(address: str, config: dict[str, Any], timeout_s: float = 300.0) -> dict[str, str]:
    """Submit the config and wait until every application is RUNNING; returns name -> URL."""
    client = _client(address)
    names = [app["name"] for app in config["applications"]]
    submitted_at = time.time()
    try:
        client.deploy_applications(config)
    except (OSError, RuntimeError) as exc:
        raise DeployError(f"the cluster refused the Serve config: {exc}") from exc
    deadline = time.monotonic() + timeout_s
    while True:
        # The controller applies a config on its next loop: never trust a status read at once.
        time.sleep(POLL_SECONDS)
        details = client.get_serve_details()
        apps = details.get("applications") or {}
        current = {n: apps.get(n) or {} for n in names}
        failed = {n: a.get("message", "") for n, a in current.items() if a.get("status") == "DEPLOY_FAILED"}
        if failed:
            raise DeployError("\n".join(f"application {n!r} failed to deploy:\n{m}" for n, m in failed.items()))
        if all(
            a.get("status") == "RUNNING" and (a.get("last_deployed_time_s") or 0) >= submitted_at - 5
            for a in current.values()
        ):
            break
        if time.monotonic() > deadline:
            waiting = "; ".join(
                f"{n}: {a.get('status', 'absent')} {a.get('message', '')}".strip()
                for n, a in current.items() if a.get("status") != "RUNNING"
            )
            raise DeployError(f"applications not running after {timeout_s:g}s: {waiting}")
    return _urls(config, details)


def _urls(config: dict[str, Any], details: dict[str, Any]) -> dict[str, str]:
    wanted = config.get("http_options") or {}
    running = details.get("http_options") or {}
    if "port" in wanted and running.get("port") != wanted["port"]:
        raise DeployError(
            f"Serve was already running on this cluster with HTTP port {running.get('port')}, "
            f"not {wanted['port']}: its HTTP options cannot change; stop it first (augment serve --stop)"
        )
    host = running.get("host") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{host}:{running.get('port', 8000)}"
    return {app["name"]: base + (app.get("route_prefix") or "/") for app in config["applications"]}


def stop(address: str) -> None:
    """Remove every Serve application (and Serve's own actors) from the cluster."""
    try:
        _client(address).delete_applications()
    except (OSError, RuntimeError) as exc:
        raise DeployError(f"could not remove the Serve applications at {address}: {exc}") from exc
