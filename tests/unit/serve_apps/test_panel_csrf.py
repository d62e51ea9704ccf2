"""A Gradio panel in-process behind the gateway (serve_apps.gateway.panels.mount_panel): only a
session gets in, and a change (a queue join, an upload) needs our own origin and the session's
CSRF token; the page carries the script that sends it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from augment_core.identity import Identity, Role
from augment_core.settings import Settings
from augment_core.store import open_store
from serve_apps.gateway.panels import csrf_head, mount_panel

ORIGIN = "http://127.0.0.1"
PREFIX = "/augment"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(workflows_dir=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'a.db'}",
                    storage_root=str(tmp_path / "data"), auth_cache_seconds=0)


@pytest.fixture
def session(settings: Settings) -> tuple[str, str]:
    """(cookie value, CSRF token) of a signed-in viewer."""
    identity = Identity(open_store(settings))
    identity.create_user("vera", Role.viewer, "a long password")
    token, principal = identity.create_session("vera", dt.timedelta(hours=1))
    assert principal.csrf_token
    return token, principal.csrf_token


@pytest.fixture
def panel(settings: Settings) -> Iterator[TestClient]:
    with gr.Blocks() as blocks:
        name = gr.Textbox(elem_id="name")
        greeting = gr.Markdown()
        name.submit(lambda n: f"hello {n}", name, greeting, api_name="greet")
    # `with`: Gradio's lifespan starts its queue, as it does in the replica.
    with TestClient(mount_panel(blocks, settings, PREFIX), base_url=ORIGIN, follow_redirects=False) as client:
        yield client


def join(client: TestClient, headers: dict[str, Any]) -> int:
    body = {"data": ["ana"], "fn_index": 0, "session_hash": "s1", "event_data": None, "trigger_id": None}
    return client.post("/gradio_api/queue/join", json=body, headers=headers).status_code


def test_the_page_carries_the_script_that_sends_the_token(panel: TestClient, session: tuple[str, str]) -> None:
    panel.cookies.set("augment_session", session[0])
    page = panel.get("/", headers={"accept": "text/html"})
    assert page.status_code == 200
    config = panel.get("/config").json()
    assert config["head"].startswith("<script>") and '"X-CSRF-Token"' in config["head"]
    assert '"/augment/session"' in config["head"]


def test_a_change_needs_our_origin_and_the_sessions_token(panel: TestClient, session: tuple[str, str]) -> None:
    cookie, csrf = session
    panel.cookies.set("augment_session", cookie)
    assert join(panel, {"origin": ORIGIN}) == 403  # what a page of ours without the script would send
    assert join(panel, {"origin": ORIGIN, "x-csrf-token": "not it"}) == 403
    assert join(panel, {"origin": ORIGIN, "x-csrf-token": ("é" + csrf[1:]).encode("latin-1")}) == 403  # not a 500
    assert join(panel, {"origin": "https://evil.example", "x-csrf-token": csrf}) == 403
    assert join(panel, {"sec-fetch-site": "cross-site", "x-csrf-token": csrf}) == 403
    assert join(panel, {"origin": ORIGIN, "x-csrf-token": csrf}) == 200
    upload = panel.post("/gradio_api/upload", files={"files": ("a.txt", b"hello")},
                        headers={"origin": ORIGIN, "x-csrf-token": csrf})
    assert upload.status_code == 200, upload.text
    refused = panel.post("/gradio_api/upload", files={"files": ("a.txt", b"hello")}, headers={"origin": ORIGIN})
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
    # reads need no token
    assert panel.get("/config").status_code == 200


def test_a_cross_site_form_gets_an_html_refusal(panel: TestClient, session: tuple[str, str]) -> None:
    panel.cookies.set("augment_session", session[0])
    answer = panel.post("/gradio_api/queue/join", data={"fn_index": "0"},
                        headers={"origin": "https://evil.example", "accept": "text/html"})
    assert answer.status_code == 403 and "Cross-site request refused" in answer.text


def test_panels_take_sessions_only(panel: TestClient, settings: Settings) -> None:
    identity = Identity(open_store(settings))
    identity.create_user("ana", Role.admin, None)
    _, key = identity.create_key("ana", "script")
    answer = panel.get("/config", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 401 and answer.json()["login"] == f"{PREFIX}/login"
    assert join(panel, {"Authorization": f"Bearer {key}", "origin": ORIGIN}) == 401


def test_websockets_are_refused(panel: TestClient, session: tuple[str, str]) -> None:
    panel.cookies.set("augment_session", session[0])
    with pytest.raises(WebSocketDisconnect) as refused, panel.websocket_connect("ws://127.0.0.1/x"):
        pass
    assert refused.value.code == 1008  # closed before it was accepted: a server answers the handshake 403


def test_the_script_cannot_end_its_element() -> None:
    head = csrf_head("/a</script><b>")
    assert head.count("</script>") == 1 and "\\u003c/script\\u003e" in head


def test_a_non_ascii_token_is_a_mismatch_for_the_api_too(settings: Settings) -> None:
    from serve_apps.api_v1.app import create_app

    identity = Identity(open_store(settings))
    identity.create_user("otto", Role.operator, None)
    token, principal = identity.create_session("otto", dt.timedelta(hours=1))
    assert principal.csrf_token
    api = TestClient(create_app(settings, 1 << 20), base_url=ORIGIN, raise_server_exceptions=False)
    api.cookies.set("augment_session", token)
    answer = api.post("/v1/runs/x/cancel", headers={"x-csrf-token": ("é" + principal.csrf_token[1:]).encode("latin-1")})
    assert answer.status_code == 403 and "X-CSRF-Token" in answer.json()["detail"]  # was a 500
    assert api.post("/v1/runs/x/cancel", headers={"x-csrf-token": principal.csrf_token}).status_code == 404


def test_the_front_ends_hashed_assets_are_kept_by_the_browser_and_only_for_the_signed_in(
        panel: TestClient, session: tuple[str, str]) -> None:
    import gradio.routes

    asset = next(p.name for p in Path(gradio.routes.BUILD_PATH_LIB).iterdir() if p.name.startswith("Index-")
                 and p.name.endswith(".js"))
    assert panel.get(f"/assets/{asset}").status_code in (302, 303, 401)  # a stranger gets no asset, kept or not
    panel.cookies.set("augment_session", session[0])
    answer = panel.get(f"/assets/{asset}")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert "immutable" not in panel.get("/config").headers.get("cache-control", "")
    assert panel.get("/assets/no-such-file.js").headers.get("cache-control") != "private, max-age=31536000, immutable"


def test_an_idle_panel_queue_polls_calmly(settings: Settings) -> None:
    """Gradio's queue polls every 1 ms when idle (5 % of a core per replica); mount_panel slows that
    down through attributes Gradio does not document: an upgrade that renames them fails here."""
    from serve_apps.gateway.panels import PROGRESS_POLL_SECONDS, QUEUE_POLL_SECONDS

    with gr.Blocks() as blocks:
        gr.Markdown("idle")
    mount_panel(blocks, settings, PREFIX)
    queue = blocks._queue
    assert queue.sleep_when_free == QUEUE_POLL_SECONDS
    assert queue.progress_update_sleep_when_free == PROGRESS_POLL_SECONDS
