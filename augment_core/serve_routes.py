"""Where the Serve applications of configs/serve.yaml answer: every route under one prefix, and
the shell and panels told the prefix (they link to each other and to the login page below it).

Shared by `augment serve` (serve_apps/deploy.py) and the RayService generator
(cluster/kuberay_manifests.py), which may not import each other."""

from __future__ import annotations

import re
from typing import Any

SHELL_IMPORT_PATH = "serve_apps.shell:build_app"
API_IMPORT_PATH = "serve_apps.api:build_app"
ROUTE = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")


def normalise_prefix(prefix: str | None) -> str:
    """'' for no prefix, else '/a/b' (no trailing slash); ValueError when it is no route."""
    value = (prefix or "").strip().rstrip("/")
    if value and not value.startswith("/"):
        value = "/" + value
    if not ROUTE.match(value):
        raise ValueError(f"prefix {prefix!r} must be a route such as /augment")
    return value


def is_panel(app: dict[str, Any]) -> bool:
    """A panel application: ours, neither the API nor the shell."""
    path = str(app.get("import_path", ""))
    return path.startswith("serve_apps.") and path not in (API_IMPORT_PATH, SHELL_IMPORT_PATH)


def place_under_prefix(config: dict[str, Any], root: str) -> list[str]:
    """Put every application of `config` (changed in place) under `root` (normalised); a panel
    learns its own route (PanelApp.manifest). The routes that are no route, one line each."""
    applications = config.get("applications")
    bad_routes = []
    for i, app in enumerate(applications if isinstance(applications, list) else []):
        if not isinstance(app, dict):
            continue
        route = app.get("route_prefix", "/")
        if not isinstance(route, str) or not route.startswith("/") or not ROUTE.match(route.rstrip("/")):
            bad_routes.append(f"applications[{i}].route_prefix: {route!r} is not a route such as /api")
            continue
        if root:
            app["route_prefix"] = root if route == "/" else root + route.rstrip("/")
        if app.get("import_path") == SHELL_IMPORT_PATH:
            app["args"] = {**(app.get("args") or {}), "prefix": root}
        elif is_panel(app):
            app["args"] = {**(app.get("args") or {}), "prefix": root, "route": route.rstrip("/")}
    return bad_routes
