"""`augment cluster up|down|status`: a local Ray head node with the dashboard and Jobs API."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from augment_core.identity import SESSION_COOKIE
from augment_core.settings import Settings


@dataclass(frozen=True)
class LocalCluster:
    dashboard_port: int = 8265
    gcs_port: int = 6380  # Ray's default 6379 is Redis's port on these machines
    client_server_port: int = 10001
    agent_port: int = 52365
    # Ray's metrics agent exports every process's metrics here (Prometheus format); KubeRay's port.
    metrics_port: int = 8080
    num_cpus: int | None = None
    # Ray's default is 30 % of memory. Capped, a run's memory stays flat with its input: Ray Data
    # spills what exceeds it to disk. At 500 MB, spilling and restoring a 1 M-row run's validated
    # records took 11 of its 45 s; at 2 GB a 4 M-row run's peak was 1.4x a 1 M-row run's; at 1 GB,
    # 1.19x, as fast as 2 GB (docs/benchmarks.md).
    object_store_bytes: int = 1_000_000_000
    token_auth: bool = True  # Ray's own token authentication; off only by an explicit choice
    temp_dir: str | None = None  # Ray's folder for sessions and logs; None: Ray's /tmp/ray

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"


# Ray lists every node's metrics exporter here (its temp folder); Prometheus reads it (file_sd_configs).
SERVICE_DISCOVERY_FILE = Path(tempfile.gettempdir()) / "ray" / "prom_metrics_service_discovery.json"

AuthMode = Literal["token", "disabled"]
AUTH_MODE_ENV = "RAY_AUTH_MODE"


def token_path() -> Path:
    """Where Ray's clients look for the cluster's token (Ray's own default and override)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def ensure_token() -> Path | None:
    """The token file, written (owner-only) when there is none; None when RAY_AUTH_TOKEN holds it."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = token_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))  # 256 bits, as `ray get-auth-token --generate`
    return path


def cluster_env(settings: Settings, cluster: LocalCluster | None = None) -> dict[str, str]:
    """The environment of the head node: its jobs, actors and Serve replicas inherit it.

    Settings go in as absolute values so a job's working directory does not move the data.
    With token auth every client (jobs API, dashboard, `ray.init`) must present the token, so
    nobody else on the machine can run code on the cluster.
    """
    cluster = cluster or LocalCluster()
    env = dict(os.environ)
    env.update(settings.exported())
    env[AUTH_MODE_ENV] = "token" if cluster.token_auth else "disabled"
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    if settings.serve_ingress == "haproxy":
        env.update(haproxy_env(cluster))
    return env


def haproxy_env(cluster: LocalCluster) -> dict[str, str]:
    """Ray's switches for HAProxy ingress, with this cluster's own files and ports: Ray's defaults
    (/tmp/haproxy-serve/admin.sock, stats on 8404, metrics on 9101) are one per machine, and two
    clusters here (a developer's, the tests', a benchmark's) would take each other's."""
    folder = Path(tempfile.gettempdir()) / f"augment-haproxy-{cluster.gcs_port}"
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",  # HAProxy sends requests to replicas' own HTTP ports
        # A stopping replica lingers this long for load balancers outside Ray to let go of it (Ray's
        # default, 30 s, is for a cloud load balancer); the HAProxy here is told by Serve at once.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "3",
        # Sticky sessions: a browser's requests (and a gradio_client's, which keeps the cookie) go to
        # the replica its login cookie hashes to, because a Gradio panel's queue lives in one
        # process. Requests without the cookie (API keys, the login page) are spread round robin.
        "RAY_SERVE_HAPROXY_BALANCE_ALGORITHM": f"hash req.cook({SESSION_COOKIE})",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state"),
        # Beside the dashboard's port, which is already this cluster's own.
        "RAY_SERVE_HAPROXY_STATS_PORT": str(cluster.dashboard_port + 1),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(cluster.dashboard_port + 2),
    }


def _ray_cli() -> str:
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else (shutil.which("ray") or "ray")


def head_command(cluster: LocalCluster) -> list[str]:
    command = [
        _ray_cli(), "start", "--head",
        f"--port={cluster.gcs_port}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={cluster.dashboard_port}",
        f"--ray-client-server-port={cluster.client_server_port}",
        f"--dashboard-agent-listen-port={cluster.agent_port}",
        f"--metrics-export-port={cluster.metrics_port}",
        f"--object-store-memory={cluster.object_store_bytes}",
        "--disable-usage-stats",
    ]
    if cluster.num_cpus is not None:
        command.append(f"--num-cpus={cluster.num_cpus}")
    if cluster.temp_dir is not None:
        command.append(f"--temp-dir={cluster.temp_dir}")
    return command


def up(settings: Settings, cluster: LocalCluster) -> None:
    """Start the head node in the background; `down()` (ray stop) ends it."""
    if cluster.token_auth:
        ensure_token()
    env = cluster_env(settings, cluster)
    result = subprocess.run(head_command(cluster), env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"ray start failed (exit {result.returncode}):\n{result.stderr[-3000:] or result.stdout[-3000:]}"
        )
    wait_for_dashboard(cluster.dashboard_url)


def start_attached(settings: Settings, cluster: LocalCluster, log_path: Path) -> subprocess.Popen:
    """Start a head node tied to the returned process: terminating it stops only this cluster
    (`ray start --block`), unlike `ray stop`, which stops every Ray process on the machine."""
    if cluster.token_auth:
        ensure_token()
    env = cluster_env(settings, cluster)
    with log_path.open("ab") as log:
        process = subprocess.Popen([*head_command(cluster), "--block"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_dashboard(cluster.dashboard_url)
    except RuntimeError:
        process.terminate()
        raise RuntimeError(f"the test cluster did not start; see {log_path}") from None
    return process


def wait_for_dashboard(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while dashboard_auth_mode(url) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray dashboard did not answer at {url} within {timeout:g}s")
        time.sleep(0.5)


def dashboard_auth_mode(url: str) -> AuthMode | None:
    """How the dashboard at `url` lets clients in, asked without a token: it answers 401 when it
    wants one. None when nothing answers."""
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=2) as response:
            return "disabled" if response.status == 200 else None
    except urllib.error.HTTPError as exc:
        return "token" if exc.code == 401 else None
    except OSError:
        return None


def adopt_auth_mode(url: str) -> None:
    """Make this process's Ray clients speak the way the cluster at `url` listens: Ray sends its
    token only when RAY_AUTH_MODE=token is set. An explicit RAY_AUTH_MODE is left alone."""
    if AUTH_MODE_ENV in os.environ:
        return
    mode = dashboard_auth_mode(url)
    if mode is None:
        return
    os.environ[AUTH_MODE_ENV] = mode
    if "ray" in sys.modules:
        # Ray's C++ config read RAY_AUTH_MODE when ray was imported; re-read it, as Ray itself does
        # when `ray.init()` turns token auth on (authentication_token_setup._enable_token_auth).
        from ray._raylet import Config  # type: ignore[attr-defined]  # a compiled module without stubs

        Config.initialize("")


def down() -> None:
    subprocess.run([_ray_cli(), "stop", "--force"], capture_output=True, text=True, check=False)


def is_up(cluster: LocalCluster) -> bool:
    return dashboard_auth_mode(cluster.dashboard_url) is not None
