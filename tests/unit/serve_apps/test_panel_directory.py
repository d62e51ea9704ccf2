"""The shell's directory of panels (serve_apps/discovery.py) with Serve replaced by plain functions:
panels found at run time, the ones that fail shown as unavailable with why, never the shell down;
and /panels.json, which lists them by the signed-in user's role."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient
from ray.serve.exceptions import RayServeException

from augment_core.identity import Identity, Role
from augment_core.settings import Settings
from augment_core.store import open_store
from serve_apps.discovery import PanelDirectory
from serve_apps.shell import ShellArgs, create_shell_app

pytestmark = pytest.mark.unit
ORIGIN = "http://127.0.0.1:8000"


def manifest(name: str, title: str, role: str = "viewer", health: str = "ok") -> dict[str, Any]:
    return {"name": name, "title": title, "path": f"/ui/{name}", "role": role, "version": "0.1.0",
            "health": health, "replica": "r1"}


class FakeServe:
    """Applications by name: (status, message, deployed at) and what their ingress answers."""

    def __init__(self) -> None:
        self.status: dict[str, tuple[str, str, float]] = {}
        self.answers: dict[str, Any] = {}
        self.asked: list[str] = []
        self.status_error: Exception | None = None

    def read_status(self) -> dict[str, tuple[str, str, float]]:
        if self.status_error is not None:
            raise self.status_error
        return dict(self.status)

    async def read_manifest(self, name: str) -> dict[str, Any]:
        self.asked.append(name)
        answer = self.answers[name]
        if answer == "hang":
            await asyncio.sleep(10)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    def deploy(self, name: str, answer: Any, status: str = "RUNNING", at: float = 1.0) -> None:
        self.status[name] = (status, "", at)
        self.answers[name] = answer


@pytest.fixture
def fake() -> FakeServe:
    serve = FakeServe()
    serve.deploy("shell", RayServeException("no manifest"))
    serve.deploy("api", RayServeException("Tried to call a method 'manifest' that does not exist."))
    serve.deploy("runs", manifest("runs", "Runs"))
    serve.deploy("admin", manifest("admin", "Users and keys", role="admin"))
    return serve


def directory(fake: FakeServe, now: list[float]) -> PanelDirectory:
    return PanelDirectory("shell", read_status=fake.read_status, read_manifest=fake.read_manifest,
                          timeout_s=0.2, ttl_s=0, forget_after_s=60, clock=lambda: now[0])


def listed(found: PanelDirectory) -> dict[str, tuple[bool, str]]:
    entries, _ = asyncio.run(found.panels())
    return {e.name: (e.available, e.reason) for e in entries}


def test_panels_are_the_applications_that_answer_a_manifest(fake: FakeServe) -> None:
    found = directory(fake, [0.0])
    assert listed(found) == {"admin": (True, ""), "runs": (True, "")}
    assert "shell" not in fake.asked  # never itself
    fake.asked.clear()
    listed(found)
    assert "api" not in fake.asked  # known not to be a panel until it is redeployed
    fake.deploy("api", manifest("api", "Not really"), at=2.0)
    assert listed(found)["api"] == (True, "")


def test_a_failing_slow_or_unhealthy_panel_is_unavailable_with_why_and_the_others_stay(fake: FakeServe) -> None:
    now = [0.0]
    found = directory(fake, now)
    listed(found)  # both seen once
    fake.answers["runs"] = "hang"
    fake.deploy("admin", manifest("admin", "Users and keys", role="admin", health="OperationalError: no store"))
    assert listed(found) == {"runs": (False, "it did not answer in time"),
                             "admin": (False, "OperationalError: no store")}
    fake.status["runs"] = ("DEPLOY_FAILED", "ImportError: no module named x\ntraceback...", 3.0)
    fake.answers["runs"] = RuntimeError("replica died")
    assert listed(found)["runs"] == (False, "its application is DEPLOY_FAILED: ImportError: no module named x")
    fake.status["runs"] = ("RUNNING", "", 3.0)
    assert listed(found)["runs"] == (False, "it failed to answer (RuntimeError)")


def test_a_removed_panel_shows_as_unavailable_then_is_forgotten(fake: FakeServe) -> None:
    now = [0.0]
    found = directory(fake, now)
    listed(found)
    del fake.status["runs"]
    now[0] = 30.0
    assert listed(found)["runs"] == (False, "not deployed (its application was removed)")
    now[0] = 61.0
    assert "runs" not in listed(found)
    fake.deploy("runs", manifest("runs", "Runs"))  # deployed again: back in the navigation
    assert listed(found)["runs"] == (True, "")


def test_an_application_never_seen_answering_is_not_listed_and_a_malformed_manifest_is_refused(
        fake: FakeServe) -> None:
    fake.deploy("starting", TimeoutError(), status="DEPLOYING")
    fake.deploy("odd", {"name": "odd", "title": ""})
    assert set(listed(directory(fake, [0.0]))) == {"runs", "admin"}


def test_when_serve_cannot_be_read_the_last_list_stays_with_a_warning(fake: FakeServe) -> None:
    found = directory(fake, [0.0])
    listed(found)
    fake.status_error = ConnectionError("controller gone")
    entries, problem = asyncio.run(found.panels())
    assert {e.name for e in entries} == {"runs", "admin"} and "cannot be read" in problem


def test_panels_json_lists_what_the_users_role_may_open(settings: Settings, fake: FakeServe) -> None:
    identity = Identity(open_store(settings))
    for name, role in (("vera", Role.viewer), ("adam", Role.admin)):
        identity.create_user(name, role, "a long password")
    shell = TestClient(create_shell_app(ShellArgs(prefix="/augment"), settings, directory(fake, [0.0])),
                       base_url=ORIGIN, follow_redirects=False)
    assert shell.get("/panels.json").status_code == 401  # strangers learn nothing
    seen = {}
    for name in ("vera", "adam"):
        shell.cookies.clear()
        signed = shell.post("/login", data={"username": name, "password": "a long password"},
                            headers={"origin": ORIGIN})
        shell.cookies.set("augment_session", signed.cookies["augment_session"])
        answer = shell.get("/panels.json").json()
        assert answer["user"] == name and answer["csrf_token"] and answer["problem"] == ""
        seen[name] = [(p["title"], p["url"], p["available"]) for p in answer["panels"]]
    assert seen["vera"] == [("Runs", "/augment/ui/runs", True)]
    assert seen["adam"] == [("Users and keys", "/augment/ui/admin", True), ("Runs", "/augment/ui/runs", True)]


def test_panels_json_counts_the_alerts_firing_and_links_the_panel_that_shows_them(
        settings: Settings, fake: FakeServe) -> None:
    from augment_core.alerts import AlertRule, AlertStore

    fake.deploy("runs", {**manifest("runs", "Runs"), "views": {"alerts": "?view=alerts"}})
    Identity(open_store(settings)).create_user("vic", Role.viewer, "a long password")
    shell = TestClient(create_shell_app(ShellArgs(prefix="/augment"), settings, directory(fake, [0.0])),
                       base_url=ORIGIN, follow_redirects=False)
    signed = shell.post("/login", data={"username": "vic", "password": "a long password"}, headers={"origin": ORIGIN})
    shell.cookies.set("augment_session", signed.cookies["augment_session"])
    assert shell.get("/panels.json").json()["alerts"] == {"url": "/augment/ui/runs/?view=alerts", "firing": 0,
                                                          "newest": None}
    alerts = AlertStore(open_store(settings))
    rule = alerts.save_rule(AlertRule(name="failed", kind="run_failed"), by="ana")
    alerts.fire(rule, "run r1", "run r1 of orgs failed: boom", run_id="r1")
    alerts.fire(rule, "run r2", "run r2 of orgs failed: bang", run_id="r2")
    assert shell.get("/panels.json").json()["alerts"] == {"url": "/augment/ui/runs/?view=alerts", "firing": 2,
                                                          "newest": "run r2 of orgs failed: bang"}
    fake.deploy("runs", RuntimeError("down"), status="UNHEALTHY", at=2.0)  # no panel to link to: the count stays
    assert shell.get("/panels.json").json()["alerts"]["url"] is None
