"""Shared fixtures: one local Ray cluster for the whole session, the real services, and the
project's own OpenAI-compatible server.

PostgreSQL and Redis tests fail (not skip) when AUGMENT_REQUIRE_SERVICES=1, as CI sets it.
Tests under tests/unit are marked `unit` and those under tests/integration `integration`
(`make test-unit` runs the first); unit tests must not start Ray.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from augment_core.settings import Settings
from devtools.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_SPEC = ROOT / "configs" / "workflows" / "organisations.yaml"
SAMPLE_CSV = ROOT / "configs" / "data" / "organisations.csv"
POSTGRES_URL = os.environ.get("AUGMENT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AUGMENT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("AUGMENT_REQUIRE_SERVICES") == "1"

# Ports of the test cluster, apart from a developer's own cluster on the defaults;
# AUGMENT_TEST_PORT_OFFSET moves them all, so two suites can run side by side.
_OFFSET = int(os.environ.get("AUGMENT_TEST_PORT_OFFSET", "0"))


def _test_port(base: int) -> int:
    """base + offset, kept outside Ray's worker port range (10002-19999): above it once an
    offset would move it inside."""
    port = base + _OFFSET
    return port if port < 10002 else port + 10_000


TEST_DASHBOARD_PORT = _test_port(8275)
TEST_GCS_PORT = _test_port(6391)
TEST_CLIENT_PORT = _test_port(9011)
TEST_SERVE_PORT = _test_port(8011)
TEST_AGENT_PORT = 52375 + _OFFSET
TEST_HOOK_PORT = _test_port(8391)
TEST_METRICS_PORT = _test_port(8392)


def service_unavailable(what: str, exc: Exception) -> None:
    message = f"{what} is unreachable: {exc}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (AUGMENT_REQUIRE_SERVICES=1: services are required)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def augment_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """AUGMENT_* settings of the test session: a fresh storage root and SQLite store."""
    home = tmp_path_factory.mktemp("augment")
    env = {
        "AUGMENT_STORAGE_ROOT": str(home / "data"),
        "AUGMENT_DATABASE_URL": f"sqlite:///{home / 'augment.db'}",
        "AUGMENT_WORKFLOWS_DIR": str(ROOT / "configs" / "workflows"),
        # The suite's callers send far more than a person would; the gateway's own tests set tight limits.
        "AUGMENT_API_RATE_PER_MINUTE": "1000000",
        "AUGMENT_API_BURST": "10000",
        # Alerts judged every 2 s, and a webhook the cluster's alert watcher may POST to on loopback
        # (tests/integration/test_panels.py listens on that port when it needs to).
        "AUGMENT_ALERT_INTERVAL_SECONDS": "2",
        "AUGMENT_ALERT_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "AUGMENT_ALERT_WEBHOOK_TEST": f"http://127.0.0.1:{TEST_HOOK_PORT}/hooks/s3cret-token",
        # Only the test's own S3 server (moto, on loopback) ever sees these.
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def settings(augment_env: dict[str, str]) -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def ray_cluster(settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    """A head node started as `augment cluster up` does, on test ports, joined by this process.

    It is attached to this session (`ray start --block`), so tearing it down stops only it.
    """
    import ray

    from cluster import local

    # Token auth on, as `augment cluster up` keeps it: every client of the suite (the driver, the
    # CLI and `ray job submit` in subprocesses, Serve) must present the session's own token.
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(tmp_path_factory.mktemp("ray-auth") / "auth_token")
    os.environ.pop("RAY_AUTH_MODE", None)
    cluster = local.LocalCluster(
        dashboard_port=TEST_DASHBOARD_PORT, gcs_port=TEST_GCS_PORT,
        client_server_port=TEST_CLIENT_PORT, agent_port=TEST_AGENT_PORT, metrics_port=TEST_METRICS_PORT,
        num_cpus=4,
    )
    if local.is_up(cluster):
        pytest.fail(f"something already listens on {cluster.dashboard_url}: stop it before the tests")
    head = local.start_attached(settings, cluster, tmp_path_factory.mktemp("ray") / "head.log")
    local.adopt_auth_mode(cluster.dashboard_url)
    if os.environ.get("RAY_AUTH_MODE") != "token":
        pytest.fail(f"the test cluster at {cluster.dashboard_url} does not ask for Ray's token")
    try:
        ray.init(address=cluster.gcs_address, logging_level="WARNING")
        yield cluster
    finally:
        ray.shutdown()
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A clean PostgreSQL database for the metadata store (tables dropped first)."""
    import sqlalchemy as sa

    from augment_core.store import engine_url, metadata

    url = POSTGRES_URL
    try:
        if _OFFSET:  # a suite beside another: a database of its own, so neither drops the other's tables
            url = _own_database(POSTGRES_URL, f"test_{_OFFSET}")
        engine = sa.create_engine(engine_url(url))
        with engine.begin() as conn:
            conn.execute(sa.text("select 1"))
        metadata.drop_all(engine)
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means the service is unusable
        service_unavailable(f"PostgreSQL at {url}", exc)
    return url


def _own_database(url: str, name: str) -> str:
    import sqlalchemy as sa

    from augment_core.store import engine_url

    base, _, _ = url.rpartition("/")
    engine = sa.create_engine(engine_url(url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if not conn.execute(sa.text("select 1 from pg_database where datname = :n"), {"n": name}).first():
            conn.execute(sa.text(f'create database "{name}"'))
    engine.dispose()
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    url = REDIS_URL
    if _OFFSET:  # a suite beside another: a database number of its own
        url = f"{REDIS_URL.rpartition('/')[0]}/{1 + (_OFFSET // 300) % 15}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        service_unavailable(f"Redis at {url}", exc)
    return url


@pytest.fixture(scope="module")
def fake_providers() -> Iterator[Callable[..., FakeOpenAI]]:
    """Starts the project's OpenAI-compatible server (devtools.fake_openai) with the options given;
    every server started is stopped when the test module ends."""
    with contextlib.ExitStack() as servers:
        yield lambda **options: servers.enter_context(FakeOpenAI(**options))


@pytest.fixture(scope="module")
def fake(request: pytest.FixtureRequest, fake_providers: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    """The module's fake provider, started with the options of its FAKE_PROVIDER dict (if any)."""
    return fake_providers(**getattr(request.module, "FAKE_PROVIDER", {}))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by its folder: tests/unit -> unit, tests/integration -> integration."""
    for item in items:
        parts = Path(str(item.path)).relative_to(ROOT / "tests").parts
        if parts[0] in ("unit", "integration"):
            item.add_marker(getattr(pytest.mark, parts[0]))


def api_key(settings: Settings, role: str = "admin") -> str:
    """A new user of `role` in the settings' store, and a key of theirs for the API's tests."""
    import uuid

    from augment_core.identity import Identity, Role
    from augment_core.store import open_store

    identity = Identity(open_store(settings))
    user = identity.create_user(f"test-{role}-{uuid.uuid4().hex[:8]}", Role(role), None)
    return identity.create_key(user.name, "tests")[1]


def api_client(settings: Settings, role: str = "admin", max_body_bytes: int = 1024 * 1024):
    """The API's app in-process, asked by a caller of `role` on an allowed host."""
    from fastapi.testclient import TestClient

    from serve_apps.api_v1.app import create_app

    return TestClient(create_app(settings, max_body_bytes), base_url="http://127.0.0.1",
                      headers={"Authorization": f"Bearer {api_key(settings, role)}"})
