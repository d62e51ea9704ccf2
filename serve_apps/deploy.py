"""`augment serve`: load the Serve config under one route prefix, deploy it, wait until it runs.

Deployment goes through the dashboard's Serve REST API (what `serve deploy` does), so it works
against any cluster whose dashboard is reachable. No runtime_env is needed: the project is
installed in the environment the cluster runs from (and `serve deploy` rejects a local
working_dir anyway).
"""

from __future__ import annotations

import copy
import re
import time
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from ray.dashboard.modules.serve.sdk import ServeSubmissionClient
from ray.serve.schema import ServeDeploySchema

from pipelines.spec.errors import format_loc

SHELL_IMPORT_PATH = "serve_apps.shell:build_app"
API_IMPORT_PATH = "serve_apps.api:build_app"
PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")
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
    value = (prefix or "").strip().rstrip("/")
    if value and not value.startswith("/"):
        value = "/" + value
    if not PREFIX.match(value):
        raise ServeConfigError("--prefix", [f"prefix {prefix!r} must be a route such as /augment"])
    return value


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
    applications = config.get("applications")
    bad_routes = []
    for i, app in enumerate(applications if isinstance(applications, list) else []):
        if not isinstance(app, dict):
            continue
        route = app.get("route_prefix", "/")
        if not isinstance(route, str) or not route.startswith("/") or not PREFIX.match(route.rstrip("/")):
            bad_routes.append(f"applications[{i}].route_prefix: {route!r} is not a route such as /api")
            continue
        if root:
            app["route_prefix"] = root if route == "/" else root + route.rstrip("/")
        # The shell and the panels link to each other and to the login page below the prefix;
        # a panel tells the shell its route (PanelApp.manifest).
        if app.get("import_path") == SHELL_IMPORT_PATH:
            app["args"] = {**(app.get("args") or {}), "prefix": root}
        elif is_panel(app):
            app["args"] = {**(app.get("args") or {}), "prefix": root, "route": route.rstrip("/")}
    if port is not None:
        config["http_options"] = {**(config.get("http_options") or {}), "port": port}
    if bad_routes:
        raise ServeConfigError(source, bad_routes)
    validate_config(config, source)
    return config


def is_panel(app: dict[str, Any]) -> bool:
    """A Gradio panel of ours: neither the API nor the shell (which keep no state per session)."""
    path = str(app.get("import_path", ""))
    return path.startswith("serve_apps.") and path not in (API_IMPORT_PATH, SHELL_IMPORT_PATH)


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
