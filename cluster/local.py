"""`augment cluster up|down|status`: a local Ray head node with the dashboard and Jobs API."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from augment_core.settings import Settings


@dataclass(frozen=True)
class LocalCluster:
    dashboard_port: int = 8265
    gcs_port: int = 6380  # Ray's default 6379 is Redis's port on these machines
    client_server_port: int = 10001
    agent_port: int = 52365
    num_cpus: int | None = None
    object_store_bytes: int = 500_000_000

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"


def cluster_env(settings: Settings) -> dict[str, str]:
    """The environment of the head node: its jobs, actors and Serve replicas inherit it.

    Settings go in as absolute values so a job's working directory does not move the data.
    Token auth is off because the node binds to 127.0.0.1 only; keep it on in production.
    """
    env = dict(os.environ)
    env.update(settings.exported())
    env["RAY_AUTH_MODE"] = "disabled"
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


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
        f"--object-store-memory={cluster.object_store_bytes}",
        "--disable-usage-stats",
    ]
    if cluster.num_cpus is not None:
        command.append(f"--num-cpus={cluster.num_cpus}")
    return command


def up(settings: Settings, cluster: LocalCluster) -> None:
    """Start the head node in the background; `down()` (ray stop) ends it."""
    result = subprocess.run(head_command(cluster), env=cluster_env(settings), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"ray start failed (exit {result.returncode}):\n{result.stderr[-3000:] or result.stdout[-3000:]}"
        )
    wait_for_dashboard(cluster.dashboard_url)


def start_attached(settings: Settings, cluster: LocalCluster, log_path: Path) -> subprocess.Popen:
    """Start a head node tied to the returned process: terminating it stops only this cluster
    (`ray start --block`), unlike `ray stop`, which stops every Ray process on the machine."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*head_command(cluster), "--block"], env=cluster_env(settings), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_dashboard(cluster.dashboard_url)
    except RuntimeError:
        process.terminate()
        raise RuntimeError(f"the test cluster did not start; see {log_path}") from None
    return process


def wait_for_dashboard(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray dashboard did not answer at {url} within {timeout:g}s")
        time.sleep(0.5)


def down() -> None:
    subprocess.run([_ray_cli(), "stop", "--force"], capture_output=True, text=True, check=False)


def is_up(cluster: LocalCluster) -> bool:
    try:
        with urllib.request.urlopen(f"{cluster.dashboard_url}/api/version", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
