"""Ray's token authentication on the local cluster: on by default, a token written owner-only, and
clients told to send it by asking the dashboard how it listens."""

from __future__ import annotations

import http.server
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from augment_core.settings import Settings
from cluster import local


@pytest.fixture
def token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ray" / "auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    return path


def test_the_head_keeps_token_auth_unless_told_otherwise(settings: Settings) -> None:
    assert local.LocalCluster().token_auth is True
    assert local.cluster_env(settings)["RAY_AUTH_MODE"] == "token"
    assert local.cluster_env(settings, local.LocalCluster(token_auth=False))["RAY_AUTH_MODE"] == "disabled"


def test_a_missing_token_is_written_once_and_only_its_owner_can_read_it(token_file: Path) -> None:
    assert local.ensure_token() == token_file
    token = token_file.read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert local.ensure_token() == token_file and token_file.read_text() == token  # kept, never replaced


def test_a_token_in_the_environment_needs_no_file(token_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "x" * 64)
    assert local.ensure_token() is None and not token_file.exists()


def dashboard(status: int) -> Iterator[str]:
    class Version(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Version)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "mode"), [(401, "token"), (200, "disabled"), (500, None)])
def test_the_dashboard_says_how_it_listens(status: int, mode: str | None) -> None:
    for url in dashboard(status):
        assert local.dashboard_auth_mode(url) == mode
    assert local.dashboard_auth_mode("http://127.0.0.1:9") is None  # nothing answers: down


ADOPT = """
import os, sys
import ray  # imported first, as in the CLI: its config must be re-read
from ray._raylet import AuthenticationMode, get_authentication_mode
from cluster import local
local.adopt_auth_mode(sys.argv[1])
print(os.environ.get("RAY_AUTH_MODE"), get_authentication_mode() == AuthenticationMode.TOKEN)
"""


@pytest.mark.parametrize(("status", "given", "printed"), [
    (401, None, "token True"), (200, None, "disabled False"), (401, "disabled", "disabled False")])
def test_a_client_speaks_the_way_the_cluster_listens_unless_told(status: int, given: str | None, printed: str) -> None:
    # In a process of its own: re-reading Ray's config here would change this session's cluster client.
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"} | ({"RAY_AUTH_MODE": given} if given else {})
    for url in dashboard(status):
        out = subprocess.run([sys.executable, "-c", ADOPT, url], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == printed
