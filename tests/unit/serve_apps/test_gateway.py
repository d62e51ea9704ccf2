"""The gateway in-process: every API route checks who asks, sessions need CSRF tokens, keys can be
revoked, rates are limited, and the shell's login page hands out the session."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from augment_core.audit import list_entries
from augment_core.identity import Identity, Role
from augment_core.quotas import KeyQuotas
from augment_core.settings import Settings
from augment_core.store import open_store
from serve_apps.api_v1.app import create_app
from serve_apps.shell import ShellArgs, create_shell_app

ORIGIN = "http://127.0.0.1"
# The least role of every route. A new route fails this test until it is listed here.
ROLES = {
    ("GET", "/v1/health"): None,
    ("GET", "/v1/me"): Role.viewer,
    ("GET", "/v1/workflows"): Role.viewer,
    ("POST", "/v1/workflows/{name}/augment"): Role.operator,
    ("GET", "/v1/runs"): Role.viewer,
    ("GET", "/v1/runs/{run_id}"): Role.viewer,
    ("POST", "/v1/runs/{run_id}/cancel"): Role.operator,
    ("GET", "/v1/runs/{run_id}/events"): Role.viewer,
    ("GET", "/v1/datasets"): Role.viewer,
    ("GET", "/v1/datasets/{dataset}"): Role.viewer,
    ("GET", "/v1/datasets/{dataset}/diff"): Role.viewer,
    ("GET", "/v1/datasets/{dataset}/versions/{version}/download"): Role.viewer,
    ("GET", "/v1/reviews"): Role.viewer,
    ("GET", "/v1/reviews/{item_id}"): Role.viewer,
    ("POST", "/v1/reviews/{item_id}/accept"): Role.operator,
    ("POST", "/v1/reviews/{item_id}/reject"): Role.operator,
    ("POST", "/v1/reviews/{item_id}/edit"): Role.operator,
    ("POST", "/v1/reviews/{item_id}/rerun"): Role.operator,
    ("GET", "/v1/audit"): Role.admin,
    ("POST", "/v1/runs"): Role.operator,
    ("POST", "/v1/runs/{run_id}/resume"): Role.operator,
    ("GET", "/v1/users"): Role.admin,
    ("POST", "/v1/users"): Role.admin,
    ("POST", "/v1/users/{name}/role"): Role.admin,
    ("POST", "/v1/users/{name}/disable"): Role.admin,
    ("POST", "/v1/users/{name}/enable"): Role.admin,
    # Everyone manages their own keys; only admins other users' (tests/unit/serve_apps/test_admin_api.py).
    ("GET", "/v1/keys"): Role.viewer,
    ("POST", "/v1/keys"): Role.viewer,
    ("POST", "/v1/keys/{prefix}/revoke"): Role.viewer,
    ("GET", "/openapi.json"): Role.viewer,
    ("GET", "/docs"): Role.viewer,
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(workflows_dir=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'a.db'}",
                    auth_cache_seconds=0, api_rate_per_minute=60, api_burst=5)


@pytest.fixture
def keys(settings: Settings) -> dict[Role, str]:
    identity = Identity(open_store(settings))
    found = {}
    for role in Role:
        identity.create_user(role.value, role, "a long password")
        found[role] = identity.create_key(role.value, "tests")[1]
    return found


def app_client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings, 1 << 20), base_url=ORIGIN)


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_route_is_listed_with_its_role(settings: Settings) -> None:
    app = create_app(settings, 1 << 20)
    documented = {(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops}
    hidden = {(method, route.path) for route in app.routes if isinstance(route, APIRoute) for method in route.methods}
    assert documented | hidden == set(ROLES)


@pytest.mark.parametrize(("method", "path"), sorted(ROLES))
def test_each_route_refuses_strangers_and_lower_roles(settings: Settings, keys: dict[Role, str],
                                                      method: str, path: str) -> None:
    client, needed = app_client(settings), ROLES[(method, path)]
    url = concrete(path)
    if needed is None:
        assert client.request(method, url).status_code == 200
        return
    stranger = client.request(method, url)
    assert stranger.status_code == 401 and stranger.headers["www-authenticate"].startswith("Bearer")
    for role in Role:
        answer = client.request(method, url, headers={"Authorization": f"Bearer {keys[role]}"})
        if role.allows(needed):
            assert answer.status_code not in (401, 403), (role, answer.text)
        else:
            assert answer.status_code == 403 and answer.json()["needed_role"] == needed.value


def test_a_revoked_key_an_expired_one_and_a_disabled_user_are_refused(settings: Settings) -> None:
    identity = Identity(open_store(settings))
    identity.create_user("ana", Role.operator, None)
    key, secret = identity.create_key("ana", "crm")
    client = app_client(settings)
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.json() == {"user": "ana", "role": "operator", "via": "key", "key_prefix": key.prefix}
    identity.revoke_key(key.prefix)
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    _, other = identity.create_key("ana", "other")
    identity.set_disabled("ana", True)
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {other}"}).status_code == 401
    assert identity.list_keys("ana")[0].state == "revoked"


def test_a_caller_beyond_its_rate_gets_429_with_retry_after(settings: Settings, keys: dict[Role, str]) -> None:
    client = app_client(settings)
    answers = [client.get("/v1/me", headers={"Authorization": f"Bearer {keys[Role.viewer]}"}) for _ in range(8)]
    codes = [a.status_code for a in answers]
    assert codes[:5] == [200] * 5 and 429 in codes
    refused = next(a for a in answers if a.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1


def test_the_gcra_lets_a_burst_through_then_paces() -> None:
    now = [0.0]
    quotas = KeyQuotas(clock=lambda: now[0])
    assert [quotas.admit("k", 60, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert quotas.admit("k", 60, 3) == pytest.approx(1.0)
    now[0] = 1.0
    assert quotas.admit("k", 60, 3) == 0.0
    assert quotas.admit("other", 60, 3) == 0.0  # each caller counts alone
    assert quotas.open_stream("k", 1) and not quotas.open_stream("k", 1)
    quotas.close_stream("k")
    assert quotas.open_stream("k", 1)


def test_login_sets_a_session_that_needs_csrf_for_changes_and_logout_ends_it(
        settings: Settings, keys: dict[Role, str]) -> None:
    shell = TestClient(create_shell_app(ShellArgs(prefix="/augment"), settings), base_url=ORIGIN,
                       follow_redirects=False)
    page = shell.get("/", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/augment/login?next=/"
    wrong = shell.post("/login", data={"username": "operator", "password": "nope nope"}, headers={"origin": ORIGIN})
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    foreign = shell.post("/login", data={"username": "operator", "password": "a long password"},
                         headers={"origin": "https://evil.example"})
    assert foreign.status_code == 403
    ok = shell.post("/login", data={"username": "operator", "password": "a long password",
                                    "next": "https://evil.example/"}, headers={"origin": ORIGIN})
    assert ok.status_code == 303 and ok.headers["location"] == "/augment/"  # never off-site
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/augment" in cookie
    token = ok.cookies["augment_session"]
    shell.cookies.set("augment_session", token)
    csrf = shell.get("/session").json()["csrf_token"]

    api = app_client(settings)
    api.cookies.set("augment_session", token)
    assert api.get("/v1/me").json()["via"] == "session"
    assert api.post("/v1/runs/x/cancel").status_code == 403  # a cross-site form would look like this
    assert api.post("/v1/runs/x/cancel", headers={"X-CSRF-Token": csrf}).status_code == 404  # let through
    assert shell.post("/logout", data={"csrf_token": "wrong"}).status_code == 403
    assert shell.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert api.get("/v1/me").status_code == 401
    actions = [(e.actor, e.action, e.outcome) for e in list_entries(open_store(settings))]
    assert ("operator (session)", "logout", "ok") in actions and ("operator (session)", "login", "ok") in actions
    assert ("operator (login)", "login", "refused") in actions


def test_a_host_that_is_not_configured_is_refused(settings: Settings, keys: dict[Role, str]) -> None:
    answer = app_client(settings).get("/v1/me", headers={"Authorization": f"Bearer {keys[Role.admin]}",
                                                         "host": "attacker.example"})
    assert answer.status_code == 400 and "AUGMENT_ALLOWED_HOSTS" in answer.json()["detail"]


def test_no_cors_unless_configured_and_then_only_for_keys(settings: Settings, keys: dict[Role, str]) -> None:
    auth = {"Authorization": f"Bearer {keys[Role.viewer]}"}
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}
    plain = app_client(settings)
    assert "access-control-allow-origin" not in plain.get("/v1/me", headers={**auth, "Origin": "https://app.example"}).headers
    assert "access-control-allow-origin" not in plain.options("/v1/me", headers=preflight).headers

    configured = app_client(settings.model_copy(update={"cors_origins": "https://app.example/, https://b.example"}))
    answer = configured.get("/v1/me", headers={**auth, "Origin": "https://app.example"})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-credentials" not in answer.headers  # the session cookie never crosses sites
    allowed = configured.options("/v1/me", headers=preflight)
    assert allowed.status_code == 200 and "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = configured.get("/v1/me", headers={**auth, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
