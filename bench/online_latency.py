"""Online latency under open-loop load: one-record augments of the sample workflow next to health checks.

Starts a head node as `augment cluster up` does (its own ports, a temporary store) and deploys
configs/serve.yaml as `augment serve` does. Then sends requests on a fixed schedule: open loop,
so a slow answer never slows the sender, and each latency counts from the request's scheduled
send time (a request the client could not send on time is late, not excused).

Phase 1, `--rate` req/s of `POST /api/v1/workflows/organisations/augment` (one record each) and
as many `GET /api/v1/health` beside them, for `--seconds`. Phase 2, `--overload-rate` augments a
second for `--overload-seconds`: every request must be answered (200, or 503 with Retry-After)
within a second, and the 200s per second must stay at the phase-1 rate. The client runs on the
same machine as the cluster and takes its share of the CPUs.

Each phase also prints the CPU time per answered request of the ingress (Ray's Python proxy or
HAProxy), the API replicas, the quota actor and this load generator. The whole run is made once
per ingress (`AUGMENT_SERVE_INGRESS`), one cluster after the other, side by side in one output.

    .venv/bin/python bench/online_latency.py [--rate 100 --seconds 60 --overload-rate 200 --overload-seconds 30]
                                             [--ingress proxy haproxy]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import light_http  # noqa: E402
from synth import organisations  # noqa: E402

from augment_core.identity import Identity, Role  # noqa: E402
from augment_core.settings import Settings  # noqa: E402
from augment_core.store import open_store  # noqa: E402
from cluster import local  # noqa: E402
from serve_apps import deploy  # noqa: E402

# Apart from a developer's own cluster and the test suite's.
CLUSTER = local.LocalCluster(dashboard_port=8385, gcs_port=6393, client_server_port=9013, agent_port=52385,
                             metrics_port=8388)
SERVE_PORT = 8013
API = "/api/v1"
TIMEOUT_S = 5.0
# Requests the client keeps open at most: past that, a scheduled request is counted as `not sent`
# rather than piling up (thousands of pending requests starved the client itself of CPU).
MAX_IN_FLIGHT = 500


@dataclass
class Tally:
    """What one kind of request got in one phase."""

    latencies_ms: list[float] = field(default_factory=list)  # answered, from the scheduled send time
    statuses: Counter[str] = field(default_factory=Counter)
    ok_per_second: Counter[int] = field(default_factory=Counter)  # 200s by the second they were answered in
    retry_after_missing: int = 0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def line(self, name: str) -> str:
        return (f"  {name:<8} sent {sum(self.statuses.values()):>6}  {dict(sorted(self.statuses.items()))}  "
                f"p50 {self.percentile(50):7.1f} ms  p90 {self.percentile(90):7.1f}  p99 {self.percentile(99):7.1f}"
                f"  max {max(self.latencies_ms, default=float('nan')):7.1f}")


async def open_loop(port: int, headers: dict[str, str], rate: float, seconds: float, records: list[dict[str, str]],
                    with_health: bool) -> tuple[Tally, Tally]:
    augment, health = Tally(), Tally()
    host = f"127.0.0.1:{port}"
    # Prepared once: sending is a socket write, so the client's CPU stays small beside the server's.
    augments = [light_http.prepare("POST", host, f"{API}/workflows/organisations/augment", headers,
                                   {"records": [record]}) for record in records]
    health_check = light_http.prepare("GET", host, f"{API}/health", {})
    pool = light_http.Pool("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.5
    tasks: list[asyncio.Task[None]] = []
    in_flight = 0

    async def send(kind: str, scheduled: float, i: int) -> None:
        nonlocal in_flight
        tally = augment if kind == "augment" else health
        if in_flight >= MAX_IN_FLIGHT:
            tally.statuses["not sent"] += 1
            return
        in_flight += 1
        try:
            await answer_one(augments[i % len(augments)] if kind == "augment" else health_check, scheduled, tally)
        finally:
            in_flight -= 1

    async def answer_one(request: bytes, scheduled: float, tally: Tally) -> None:
        try:
            answer = await asyncio.wait_for(pool.send(request), TIMEOUT_S - (loop.time() - scheduled))
        except (TimeoutError, asyncio.TimeoutError):
            tally.statuses["timeout"] += 1
            return
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            tally.statuses[type(exc).__name__] += 1
            return
        done = loop.time()
        tally.latencies_ms.append((done - scheduled) * 1000)
        tally.statuses[str(answer.status)] += 1
        if answer.status == 200:
            tally.ok_per_second[int(done - start)] += 1
        elif answer.status in (429, 503) and "retry-after" not in answer.headers:
            tally.retry_after_missing += 1

    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send("augment", scheduled, i)))
        if with_health:
            tasks.append(asyncio.create_task(send("health", scheduled, i)))
    await asyncio.gather(*tasks)
    pool.close()
    return augment, health


def steady_ok_rate(tally: Tally, seconds: float) -> float:
    """Median 200s per second over the phase, leaving out its first and last two seconds."""
    inner = [tally.ok_per_second.get(s, 0) for s in range(2, max(3, int(seconds) - 2))]
    return statistics.median(inner) if inner else 0.0


def start_cluster(folder: Path, ingress: str) -> tuple[Settings, local.LocalCluster, subprocess.Popen[bytes]]:
    os.environ.update({
        "AUGMENT_STORAGE_ROOT": str(folder / "data"),
        "AUGMENT_DATABASE_URL": f"sqlite:///{folder / 'augment.db'}",
        "AUGMENT_WORKFLOWS_DIR": str(ROOT / "configs" / "workflows"),
        # The benchmark measures the replica, not the per-key rate limit.
        "AUGMENT_API_RATE_PER_MINUTE": "100000000", "AUGMENT_API_BURST": "1000000",
        "AUGMENT_SERVE_INGRESS": ingress,
    })
    os.environ.pop("RAY_AUTH_MODE", None)
    settings = Settings()
    cluster = CLUSTER
    if local.is_up(cluster):
        raise SystemExit(f"something already listens on {cluster.dashboard_url}")
    head = local.start_attached(settings, cluster, folder / "head.log")
    local.adopt_auth_mode(cluster.dashboard_url)
    return settings, cluster, head


# Processes whose CPU time a phase is charged, by the name they show in `ps`.
ROLES = {"ingress": ("ray::ProxyActor", "haproxy"), "API replicas": ("ray::ServeReplica:api",),
         "quota actor": ("ray::KeyQuotas",)}


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) each role's processes have used so far, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys(ROLES, 0.0)
    used["load generator"] = sum(os.times()[:2])
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        for role, names in ROLES.items():
            if any(name in command for name in names):
                used[role] += (int(fields[11]) + int(fields[12])) / tick
    return used


def cpu_line(before: dict[str, float], after: dict[str, float], requests: int) -> str:
    parts = [f"{role} {(after[role] - before[role]) / max(requests, 1) * 1000:.1f}" for role in before]
    return "  CPU ms per answered request: " + ", ".join(parts)


def measure(folder: Path, ingress: str, args: argparse.Namespace) -> list[tuple[str, bool]]:
    """Both phases against a cluster started with `ingress`; the checks and whether each passed."""
    folder.mkdir()
    settings, cluster, head = start_cluster(folder, ingress)
    try:
        config = deploy.load_config(ROOT / "configs" / "serve.yaml", port=SERVE_PORT)
        deploy.deploy(cluster.dashboard_url, config)
        identity = Identity(open_store(settings))
        user = identity.create_user(f"bench-{uuid.uuid4().hex[:6]}", Role.operator, None)
        headers = {"Authorization": f"Bearer {identity.create_key(user.name, 'bench')[1]}"}
        records = organisations(5000, seed=3)
        asyncio.run(open_loop(SERVE_PORT, headers, 20, 5, records, with_health=True))  # warm up
        print(f"[{ingress}] phase 1: {args.rate:g} augments/s and {args.rate:g} health checks/s"
              f" for {args.seconds:g} s")
        before = cpu_seconds()
        augment, health = asyncio.run(open_loop(SERVE_PORT, headers, args.rate, args.seconds, records,
                                                with_health=True))
        answered = len(augment.latencies_ms) + len(health.latencies_ms)
        print(augment.line("augment"))
        print(health.line("health"))
        print(cpu_line(before, cpu_seconds(), answered))
        timeouts = augment.statuses["timeout"] + health.statuses["timeout"]
        checks = [
            ("augment p99 <= 50 ms", augment.percentile(99) <= 50),
            ("augment p99 <= 1.5 x health p99", augment.percentile(99) <= 1.5 * health.percentile(99)),
            ("no timeouts", timeouts == 0),
        ]
        time.sleep(5)
        print(f"[{ingress}] phase 2: {args.overload_rate:g} augments/s for {args.overload_seconds:g} s")
        over, _ = asyncio.run(open_loop(SERVE_PORT, headers, args.overload_rate, args.overload_seconds, records,
                                        with_health=False))
        print(over.line("augment"))
        goodput = steady_ok_rate(over, args.overload_seconds)
        replied = over.statuses["200"] + over.statuses["503"]
        print(f"  200s per second (median) {goodput:g}; 503 without Retry-After: {over.retry_after_missing}")
        checks += [
            ("every request answered 200 or 503", replied == sum(over.statuses.values())),
            ("every answer within 1 s", max(over.latencies_ms, default=0) <= 1000),
            (f"200s per second >= {args.rate:g}", goodput >= args.rate),
        ]
        for name, ok in checks:
            print(f"  {'PASS' if ok else 'MISS'}  {name}")
        return checks
    finally:
        head.terminate()
        head.wait(timeout=60)
        while local.is_up(cluster):  # the next cluster takes the same ports
            time.sleep(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--overload-rate", type=float, default=200)
    parser.add_argument("--overload-seconds", type=float, default=30)
    parser.add_argument("--ingress", nargs="+", choices=["proxy", "haproxy"], default=["proxy", "haproxy"],
                        help="AUGMENT_SERVE_INGRESS of each cluster, measured one after the other")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # One token for every cluster of the run: this process's Ray client reads it once.
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(Path(tmp) / "auth_token")
        for ingress in args.ingress:
            measure(Path(tmp) / ingress, ingress, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
