"""The API's users, keys and run-launching routes in-process: each through identity's functions
and audited (refused attempts too); viewers see no filesystem paths; inputs are bounded."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from augment_core.audit import list_entries
from augment_core.identity import Identity, Role
from augment_core.settings import Settings
from augment_core.store import open_store
from serve_apps.api_v1.app import create_app
from serve_apps.shell import ShellArgs, create_shell_app

ORIGIN = "http://127.0.0.1"
SPEC = """\
name: orgs
source: {kind: csv, path: in.csv}
schema:
  fields:
    id: {type: string, required: true}
sink: {dataset: orgs}
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "orgs.yaml").write_text(SPEC, encoding="utf-8")
    (folder / "in.csv").write_text("id\n1\n", encoding="utf-8")
    return Settings(workflows_dir=str(folder), database_url=f"sqlite:///{tmp_path / 'a.db'}",
                    storage_root=str(tmp_path / "data"), auth_cache_seconds=0)


@pytest.fixture
def keys(settings: Settings) -> dict[Role, str]:
    identity = Identity(open_store(settings))
    found = {}
    for role in Role:  # only the viewer signs in (argon2 takes its time)
        identity.create_user(role.value, role, "a long password" if role is Role.viewer else None)
        found[role] = identity.create_key(role.value, "tests")[1]
    return found


def as_(settings: Settings, secret: str) -> TestClient:
    return TestClient(create_app(settings, 1 << 20), base_url=ORIGIN, headers={"Authorization": f"Bearer {secret}"})


def audit(settings: Settings, action: str) -> list[tuple[str, str, str, str | None]]:
    return [(e.actor, e.target, e.outcome, e.detail) for e in list_entries(open_store(settings), action=action)]


def test_admins_manage_users_and_every_change_is_audited(settings: Settings, keys: dict[Role, str]) -> None:
    admin = as_(settings, keys[Role.admin])
    made = admin.post("/v1/users", json={"name": "ana", "role": "operator", "password": "a secret password"})
    assert made.status_code == 201 and made.json()["role"] == "operator" and made.json()["has_password"] is True
    assert admin.post("/v1/users", json={"name": "ana"}).status_code == 409
    assert admin.post("/v1/users/ana/role", json={"role": "viewer"}).json()["role"] == "viewer"
    _, secret = Identity(open_store(settings)).create_key("ana", "laptop")
    assert admin.post("/v1/users/ana/disable").json()["disabled"] is True
    assert as_(settings, secret).get("/v1/me").status_code == 401  # a disabled user's keys stop
    assert admin.post("/v1/users/ana/enable").json()["disabled"] is False
    assert admin.post("/v1/users/nobody/disable").status_code == 404
    assert admin.post("/v1/users/admin/disable").status_code == 409  # no locking yourself out
    assert admin.post("/v1/users/admin/role", json={"role": "viewer"}).status_code == 409
    assert {u["name"] for u in admin.get("/v1/users").json()} >= {"ana", "admin"}
    created = audit(settings, "user.create")
    assert ("admin (key " in created[0][0]) and [c[1:3] for c in created] == [("ana", "refused"), ("ana", "ok")]
    assert all("a secret password" not in (detail or "") for *_, detail in created)
    assert audit(settings, "user.disable")[0][1:3] == ("admin", "refused")
    # A lower role is refused, and its attempt audited.
    assert as_(settings, keys[Role.operator]).post("/v1/users", json={"name": "eve"}).status_code == 403
    [denied] = audit(settings, "access.denied")
    assert denied[0].startswith("operator (key ") and denied[1] == "POST /v1/users" and denied[2] == "refused"


@pytest.mark.parametrize("body", [
    {"name": "-bad"}, {"name": "x" * 101}, {"name": "ok", "role": "root"}, {"name": "ok", "password": "short"},
    {"name": "ok", "extra": 1},
])
def test_a_bad_user_is_422(settings: Settings, keys: dict[Role, str], body: dict[str, object]) -> None:
    assert as_(settings, keys[Role.admin]).post("/v1/users", json=body).status_code == 422


def test_keys_admins_manage_all_others_their_own(settings: Settings, keys: dict[Role, str]) -> None:
    admin = as_(settings, keys[Role.admin])
    made = admin.post("/v1/keys", json={"user": "viewer", "name": "crm", "days": 30, "rate_per_minute": 5,
                                        "daily_spend_usd": 2.5})
    assert made.status_code == 201, made.text
    key, secret = made.json()["key"], made.json()["secret"]
    assert key["daily_spend_usd"] == 2.5 and key["rate_per_minute"] == 5 and key["state"] == "active"
    assert as_(settings, secret).get("/v1/me").json()["user"] == "viewer"
    assert [(t, o) for _, t, o, _ in audit(settings, "key.create")] == [(key["prefix"], "ok")]
    assert secret not in str(audit(settings, "key.create"))

    viewer = as_(settings, keys[Role.viewer])
    assert {k["user"] for k in viewer.get("/v1/keys").json()} == {"viewer"}
    assert viewer.get("/v1/keys", params={"user": "admin"}).status_code == 403
    assert len(admin.get("/v1/keys").json()) == len(Role) + 1
    # A key cannot mint keys, nor anyone raise their own limits or make keys for others.
    for body in ({"name": "mine"}, {"name": "theirs", "user": "admin"}):
        assert viewer.post("/v1/keys", json=body).status_code == 403
    assert [o for _, _, o, _ in audit(settings, "key.create")].count("refused") == 2
    admin_prefix = next(k["prefix"] for k in admin.get("/v1/keys", params={"user": "admin"}).json())
    assert viewer.post(f"/v1/keys/{admin_prefix}/revoke").status_code == 404  # not theirs: not found
    assert viewer.post(f"/v1/keys/{key['prefix']}/revoke").json()["state"] == "revoked"
    assert as_(settings, secret).get("/v1/me").status_code == 401
    assert audit(settings, "key.revoke")[0][1:3] == (key["prefix"], "ok")


def test_the_audit_log_is_read_since_a_time_in_any_zone(settings: Settings, keys: dict[Role, str]) -> None:
    admin = as_(settings, keys[Role.admin])
    assert admin.post("/v1/users", json={"name": "ana"}).status_code == 201
    now = dt.datetime.now(dt.timezone.utc)
    recent = admin.get("/v1/audit", params={"since": (now - dt.timedelta(minutes=5)).isoformat()}).json()
    assert [e["action"] for e in recent] == ["user.create"]
    zoned = (now + dt.timedelta(minutes=5)).astimezone(dt.timezone(dt.timedelta(hours=-8))).isoformat()
    assert admin.get("/v1/audit", params={"since": zoned}).json() == []  # 5 minutes from now, written at UTC-8


def test_signed_in_users_create_their_own_keys_with_the_default_limits(
        settings: Settings, keys: dict[Role, str]) -> None:
    shell = TestClient(create_shell_app(ShellArgs(), settings), base_url=ORIGIN, follow_redirects=False)
    signed = shell.post("/login", data={"username": "viewer", "password": "a long password"},
                        headers={"origin": ORIGIN})
    token = signed.cookies["augment_session"]
    shell.cookies.set("augment_session", token)
    csrf = shell.get("/session").json()["csrf_token"]
    api = TestClient(create_app(settings, 1 << 20), base_url=ORIGIN, headers={"X-CSRF-Token": csrf})
    api.cookies.set("augment_session", token)
    assert api.post("/v1/keys", json={"name": "mine", "daily_spend_usd": 100}).status_code == 403
    made = api.post("/v1/keys", json={"name": "mine"})
    assert made.status_code == 201 and made.json()["key"]["user"] == "viewer"
    assert made.json()["key"]["daily_spend_usd"] is None


@pytest.mark.parametrize("body", [
    {"name": ""}, {"name": "k", "days": 0}, {"name": "k", "days": 10**6}, {"name": "k", "daily_spend_usd": -1},
    {"name": "k", "daily_spend_usd": 1e12}, {"name": "k", "rate_per_minute": 0}, {"name": "k", "secret": "x"},
])
def test_a_bad_key_request_is_422(settings: Settings, keys: dict[Role, str], body: dict[str, object]) -> None:
    assert as_(settings, keys[Role.admin]).post("/v1/keys", json=body).status_code == 422


def test_starting_a_run_needs_a_known_workflow_and_a_cluster(settings: Settings, keys: dict[Role, str]) -> None:
    operator = as_(settings, keys[Role.operator])
    assert operator.post("/v1/runs", json={"workflow": "nope"}).status_code == 404
    assert operator.post("/v1/runs", json={"workflow": "../x"}).status_code == 422
    no_cluster = operator.post("/v1/runs", json={"workflow": "orgs"})
    assert no_cluster.status_code == 503 and "not on a Ray cluster" in no_cluster.json()["detail"]
    assert [(t, o) for _, t, o, _ in audit(settings, "run.start")] == [("workflow orgs", "failed"),
                                                                      ("workflow nope", "refused")]
    assert open_store(settings).list_runs() == []  # nothing half-started


def test_resuming_a_run_is_refused_with_the_reason(settings: Settings, keys: dict[Role, str]) -> None:
    store = open_store(settings)
    store.create_run("run-ok", "orgs", 1, "/x/orgs.yaml", ["a"], spec={"name": "orgs"})
    store.finish_run("run-ok", "succeeded")
    store.create_run("run-failed", "orgs", 1, "/x/orgs.yaml", ["a"], spec={"name": "orgs"})
    store.finish_run("run-failed", "failed", error="boom")
    operator = as_(settings, keys[Role.operator])
    assert operator.post("/v1/runs/nope/resume").status_code == 404
    assert operator.post("/v1/runs/run-ok/resume").status_code == 409
    assert operator.post("/v1/runs/run-failed/resume").status_code == 503
    assert [o for _, _, o, _ in audit(settings, "run.resume")] == ["failed", "refused", "refused"]


def test_viewers_see_no_filesystem_paths(settings: Settings, keys: dict[Role, str], tmp_path: Path) -> None:
    store = open_store(settings)
    output = f"{settings.storage_root}/datasets/orgs/run-r1"
    store.create_run("r1", "orgs", 1, str(tmp_path / "workflows" / "orgs.yaml"), ["a"])
    store.finish_run("r1", "failed", error=f"source.path: no such file or folder: {tmp_path}/in.csv",
                     output={"dataset": "orgs", "path": output, "csv_path": "/elsewhere/v1.csv"})
    store.add_dataset_version("orgs", 1, output, {"id": "string"}, 1, "r1")
    viewer, operator = as_(settings, keys[Role.viewer]), as_(settings, keys[Role.operator])
    for client, sees in ((viewer, False), (operator, True)):
        answers = [client.get("/v1/runs").text, client.get("/v1/runs/r1").text, client.get("/v1/datasets").text,
                   client.get("/v1/datasets/orgs").text]
        assert all((str(tmp_path) in text) is sees for text in answers), (sees, answers)
    run = viewer.get("/v1/runs/r1").json()
    assert run["spec_path"] == "orgs.yaml" and run["error"] == "source.path: no such file or folder: in.csv"
    assert run["output"] == {"dataset": "orgs", "path": "datasets/orgs/run-r1", "csv_path": "v1.csv"}
    assert viewer.get("/v1/datasets").json()[0]["path"] == "datasets/orgs/run-r1"


@pytest.mark.parametrize(("path", "headers"), [
    ("/v1/runs/r1/events?after=-1", {}), ("/v1/runs/r1/events?after=9223372036854775808", {}),
    ("/v1/runs/r1/events", {"Last-Event-ID": "abc"}), ("/v1/runs/r1/events", {"Last-Event-ID": str(2**64)}),
    ("/v1/runs/" + "x" * 65, {}), ("/v1/runs?limit=0", {}), ("/v1/runs?workflow=" + "x" * 101, {}),
    ("/v1/datasets/orgs/diff?v1=1&v2=99999999999999999999", {}), ("/v1/reviews?offset=-1", {}),
    ("/v1/reviews/9223372036854775808", {}), ("/v1/audit?before_id=0", {}), ("/v1/keys?user=a%20b", {}),
    ("/v1/audit?since=yesterday", {}), ("/v1/audit?since=2026-12-01T00:00:00", {}),
])
def test_out_of_range_parameters_are_422_never_500(settings: Settings, keys: dict[Role, str], path: str,
                                                   headers: dict[str, str]) -> None:
    assert as_(settings, keys[Role.admin]).get(path, headers=headers).status_code == 422


def test_viewers_see_workflows_without_filesystem_paths(settings: Settings, keys: dict[Role, str]) -> None:
    folder = Path(settings.workflows_dir)
    (folder / "regions.csv").write_text("id,region\n1,north\n", encoding="utf-8")
    (folder / "looked.yaml").write_text(SPEC.replace("name: orgs", "name: looked").replace("sink: {dataset: orgs}", """\
steps:
  - use: lookup
    params: {reference: regions.csv, column: id, columns: [region]}
  - use: http
    params: {provider: api, path: /v1/enrich, outputs: {x: {path: x}}}
providers:
  api: {kind: http, base_url: "https://api.example/v1"}
sink: {dataset: looked}"""), encoding="utf-8")
    for role, sees in ((Role.viewer, False), (Role.operator, True)):
        text = as_(settings, keys[role]).get("/v1/workflows").text
        assert (str(folder) in text) is sees, (role, text)
    listed = {w["name"]: w for w in as_(settings, keys[Role.viewer]).get("/v1/workflows").json()}
    steps = listed["looked"]["steps"]
    assert steps[0]["params"]["reference"] == "regions.csv"
    assert steps[1]["params"]["path"] == "/v1/enrich"  # a URL's path is no file of the server
