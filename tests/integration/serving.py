"""The session's Serve deployment (configs/serve.yaml under /augment, through the dashboard's Serve
REST API), shared by every module that uses the online layer, and what those tests share: signing
in, a stored run, headless Chromium. The fixtures are session-wide (tests/integration/conftest.py
imports them); `test_serve.py` ends with `augment serve --stop`, so modules that need the
deployment run before it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from augment_core.settings import Settings
from augment_core.store import open_store, utcnow
from serve_apps import deploy
from tests.conftest import REQUIRE_SERVICES, ROOT, SAMPLE_SPEC, TEST_DASHBOARD_PORT, TEST_SERVE_PORT, api_key

PREFIX = "/augment"
DASHBOARD = f"http://127.0.0.1:{TEST_DASHBOARD_PORT}"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
BROKEN_SPEC = """\
name: broken
source: {kind: csv, path: nowhere.csv}
schema:
  fields:
    id: {type: string}
steps:
  - use: no_such_augmenter
sink: {dataset: broken, export: true}
"""


@pytest.fixture(scope="session")
def workflows_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample spec (linked, so its relative paths still resolve) next to a broken one."""
    folder = tmp_path_factory.mktemp("workflows")
    (folder / SAMPLE_SPEC.name).symlink_to(SAMPLE_SPEC)
    (folder / "broken.yaml").write_text(BROKEN_SPEC, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def serve_config(workflows_dir: Path) -> dict[str, Any]:
    """configs/serve.yaml as the session deploys it."""
    config = deploy.load_config(ROOT / "configs" / "serve.yaml", prefix=PREFIX, port=TEST_SERVE_PORT)
    for app in config["applications"]:
        if app["name"] in ("api", "workflows", "review"):  # the API serves the folder the editor edits
            app["args"] = {**(app.get("args") or {}), "workflows_dir": str(workflows_dir)}
        if app["name"] in ("review", "data", "admin"):  # 2 cores: the runs panel is tested at 2 replicas
            app["deployments"][0]["num_replicas"] = 1
    return config


@pytest.fixture(scope="session")
def base_url(ray_cluster, serve_config: dict[str, Any]) -> Iterator[str]:
    urls = deploy.deploy(DASHBOARD, serve_config)
    base = f"http://127.0.0.1:{TEST_SERVE_PORT}{PREFIX}"
    assert urls == {"api": f"{base}/api", "runs": f"{base}/ui/runs", "workflows": f"{base}/ui/workflows",
                    "review": f"{base}/ui/review", "data": f"{base}/ui/data", "admin": f"{base}/ui/admin",
                    "shell": base}
    yield base
    deploy.stop(DASHBOARD)


def redeploy(config: dict[str, Any]) -> None:
    """Deploy `config` (every application it lists; any other is removed) and wait until it runs."""
    deploy.validate_config(config)
    deploy.deploy(DASHBOARD, config)


@pytest.fixture(scope="session")
def admin_key(settings: Settings) -> str:
    return api_key(settings, "admin")


@pytest.fixture(scope="session")
def client(base_url: str, admin_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{base_url}/api/v1", timeout=60,
                      headers={"Authorization": f"Bearer {admin_key}"}) as http:
        yield http


@pytest.fixture(scope="session")
def signed_in(base_url: str, settings: Settings) -> dict[str, str]:
    """A user with a password, who signs in on the shell's login page."""
    from augment_core.identity import Identity, Role

    name = f"ops-{uuid.uuid4().hex[:6]}"
    Identity(open_store(settings)).create_user(name, Role.operator, "a long password")
    return {"username": name, "password": "a long password"}


def sign_in(http: httpx.Client, base_url: str, user: dict[str, str]) -> None:
    answer = http.post(f"{base_url}/login", data={**user, "next": f"{PREFIX}/"},
                       headers={"origin": f"http://127.0.0.1:{TEST_SERVE_PORT}"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text




def require_chromium() -> None:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium"
        pytest.fail(message) if REQUIRE_SERVICES else pytest.skip(message)


def launch_chromium(playwright: Any) -> Any:
    """Headless Debian Chromium (never a downloaded build)."""
    require_chromium()
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@pytest.fixture
def stored_run(settings: Settings) -> str:
    """A finished run written straight to the metadata store, as a coordinator would leave it."""
    store = open_store(settings)
    run_id = f"test-serve-{uuid.uuid4().hex[:8]}"
    store.create_run(run_id, "organisations", 1, str(SAMPLE_SPEC), ["validate", "normalize_url_1", "write"])
    store.update_run(
        run_id,
        status="running",
        started_at=utcnow(),
        heartbeat_at=utcnow(),
        counts={"in": 12, "valid": 10, "quarantined": 2, "augmented": 10, "failed": 0, "skipped": 0},
        steps=[
            {"name": "validate", "state": "succeeded", "rows": 12},
            {"name": "normalize_url_1", "state": "succeeded", "rows": 10},
            {"name": "write", "state": "failed", "rows": 0, "error": "disk full"},
        ],
    )
    store.finish_run(
        run_id,
        "failed",
        error="write failed: disk full",
        output={"dataset": "organisations_enriched", "version": 3, "path": "/data/x", "quarantine_path": "/data/q"},
    )
    return run_id


