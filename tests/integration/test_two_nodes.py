"""A real two-node Ray cluster on this machine: a head node and a worker node, each `ray start
--block` with its own temp dir, ports and CPU, joined by address. A workflow whose source, output
and quarantine live on S3 (moto on loopback) loses the worker node's raylet mid-run, and the API
served by one replica on each node loses the worker node while it is being asked.

This process is already a driver of the session's cluster in a full run, and a process joins one
cluster only, so everything here reaches the two-node cluster from outside: the `augment` CLI in
subprocesses, and the dashboard's REST API. Never `ray.init` here, never `ray stop` (it ends every
Ray process on the machine): each node ends with its own `--block` process, and whatever still holds
its temp dir after that is killed by pid.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import boto3
import httpx
import pyarrow.parquet as pq
import pytest
import yaml
from moto.server import ThreadedMotoServer

from augment_core.settings import Settings
from augment_core.storage import StoragePaths, filesystem_for
from augment_core.store import RunRecord, open_store
from cluster import local
from devtools.fake_openai import FakeOpenAI
from pipelines.io.parquet import complete_parquet_rows
from serve_apps.gateway.replica import REPLICA_HEADER
from tests.conftest import ROOT, TEST_AGENT_PORT, _test_port, api_key

AUGMENT = str(Path(sys.executable).parent / "augment")
BUCKET = "augment-two-nodes"

# Ports of this module's cluster: apart from the session's (tests/conftest.py), the benchmarks'
# (bench/) and a developer's defaults, and outside Ray's worker range (10002-19999).
HEAD = local.LocalCluster(
    dashboard_port=_test_port(8415),  # HAProxy's stats and metrics take the next two (local.haproxy_env)
    gcs_port=_test_port(6413), client_server_port=_test_port(9033), agent_port=TEST_AGENT_PORT + 40,
    metrics_port=_test_port(8418), num_cpus=1, object_store_bytes=200_000_000,
)
WORKER_AGENT_PORT = HEAD.agent_port + 1
WORKER_METRICS_PORT = _test_port(8419)
SERVE_PORT = _test_port(8033)

RECORDS = 240  # at 10 provider calls a second (600 a minute), the llm step lasts about 25 s
MAX_IN_FLIGHT = 4  # provider calls at once: the most a lost node can leave answered but not cached
INVALID = [["", "No id"], ["r7", "Company 7 again"]]  # a missing key and a repeated one: quarantined
NODE_JOIN_S = 60
RUN_S = 300  # a run, or its resume, from start to end
API_BACK_S = 60  # from the node's death until the API answers every request again


def wait_for(what: str, condition: Callable[[], Any], timeout_s: float, every_s: float = 0.25) -> Any:
    """Poll `condition` until it returns something truthy (returned), or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


# the cluster -------------------------------------------------------------------------------------
def processes_holding(folder: Path) -> dict[int, str]:
    """pid -> command line of every process (but this one) that names `folder` on its command line
    or has a file under it open: a node's Ray processes all write their logs there, and its workers,
    which rename themselves (ray::ServeReplica...), still hold their log files there."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(folder) in command or any(target.startswith(f"{folder}/") for target in open_files(entry)):
                found[int(entry.name)] = command
    return found


def open_files(process: Path) -> Iterator[str]:
    for fd in (process / "fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            yield os.readlink(fd)


@dataclass
class Node:
    """One `ray start --block` process and the temp dir that only its processes name."""

    name: str
    process: subprocess.Popen[bytes]
    temp_dir: Path
    log: Path
    node_id: str = ""

    def raylet_pid(self) -> int:
        raylets = [pid for pid, command in processes_holding(self.temp_dir).items()
                   if command.split(" ", 1)[0].endswith("/raylet")]
        assert len(raylets) == 1, f"expected one raylet of the {self.name} node, found {raylets}"
        return raylets[0]

    def stop(self, keep_logs: Path) -> None:
        """End the node by its own `--block` process (SIGTERM: it stops its node's processes), kill
        whatever still holds its temp dir, keep its logs beside the test's, remove the temp dir."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (left := processes_holding(self.temp_dir)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for logs in self.temp_dir.glob("session_*/logs"):
            shutil.copytree(logs, keep_logs / f"{self.name}-logs", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.sock"), ignore_dangling_symlinks=True)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@dataclass
class Command:
    process: subprocess.Popen[bytes]
    log: Path  # its stdout and stderr

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class TwoNodeCluster:
    settings: Settings
    env: dict[str, str]  # of the nodes and of every client: the settings, Ray's token, the cluster's address
    token: str
    logs: Path
    head: Node
    worker: Node | None = None
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def dashboard(self) -> str:
        return HEAD.dashboard_url

    def rest(self, path: str) -> Any:
        """GET on the dashboard, with the cluster's token."""
        request = urllib.request.Request(self.dashboard + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def state(self, kind: str) -> list[dict[str, Any]]:
        """Ray's state API (`ray list nodes|actors`), through the dashboard."""
        return self.rest(f"/api/v0/{kind}?limit=10000&detail=1")["data"]["result"]["result"]

    def alive_nodes(self) -> dict[str, dict[str, Any]]:
        return {n["node_id"]: n for n in self.state("nodes") if n["state"] == "ALIVE"}

    def start_worker(self) -> Node:
        """A worker node joined to the head by address, with a CPU of its own."""
        before = set(self.alive_nodes())
        temp_dir = Path(tempfile.mkdtemp(prefix="aug2n-w-", dir="/tmp"))  # short: socket paths are limited
        command = [
            local._ray_cli(), "start", f"--address={HEAD.gcs_address}", "--node-ip-address=127.0.0.1",
            "--num-cpus=1", f"--temp-dir={temp_dir}",
            f"--dashboard-agent-listen-port={WORKER_AGENT_PORT}", f"--metrics-export-port={WORKER_METRICS_PORT}",
            f"--object-store-memory={HEAD.object_store_bytes}", "--disable-usage-stats", "--block",
        ]
        log = self.logs / f"worker-{temp_dir.name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.worker = Node("worker", process, temp_dir, log)

        def joined() -> str | None:
            assert process.poll() is None, f"the worker node's `ray start` exited {process.returncode}; see {log}"
            new = set(self.alive_nodes()) - before
            return new.pop() if new else None

        self.worker.node_id = wait_for("the worker node to join the head", joined, NODE_JOIN_S, every_s=0.5)
        return self.worker

    def kill_worker_raylet(self) -> float:
        """SIGKILL the worker node's raylet (a node that crashed); returns when it was killed."""
        assert self.worker is not None
        os.kill(self.worker.raylet_pid(), signal.SIGKILL)
        return time.monotonic()

    def kill_worker_node(self) -> float:
        """SIGKILL every process of the worker node (a machine lost): its `ray start`, its raylet,
        and the workers, agents and replicas that hold its temp dir; returns when they were killed."""
        assert self.worker is not None
        self.worker.process.kill()
        node = processes_holding(self.worker.temp_dir)
        assert len(node) > 2, f"the worker node's processes were not found: {node}"
        for pid in node:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return time.monotonic()

    def worker_dead(self) -> bool:
        assert self.worker is not None
        return any(n["node_id"] == self.worker.node_id and n["state"] == "DEAD" for n in self.state("nodes"))

    def cli(self, *args: str) -> Command:
        """`augment ARGS` in a subprocess on this cluster; its output goes to a log of the test's."""
        log = self.logs / f"augment-{args[0]}-{uuid.uuid4().hex[:6]}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([AUGMENT, *args], env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.started.append(process)
        return Command(process, log)

    def cli_done(self, *args: str, timeout_s: float = RUN_S) -> tuple[int, str]:
        command = self.cli(*args)
        try:
            code = command.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`augment {' '.join(args)}` did not end within {timeout_s:.0f}s; see {command.log}")
        return code, command.output()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def cluster(settings: Settings, s3_endpoint: str, redis_url: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodeCluster]:
    """The head node, for the whole module; each test adds a worker node of its own (`worker`)."""
    home = tmp_path_factory.mktemp("two-nodes")
    # A metadata store of its own (every process of this cluster is on this machine), storage on S3,
    # and Redis for the gateway's quotas and the events, as the KubeRay manifests configure a cluster:
    # without it the quotas live in one actor, and losing its node refused every API key for ~15 s.
    mine = Settings(**{**settings.model_dump(), "storage_root": f"s3://{BUCKET}/augment",
                       "s3_endpoint_url": s3_endpoint, "database_url": f"sqlite:///{home / 'augment.db'}",
                       "redis_url": redis_url})
    token_file = home / "auth_token"
    token = secrets.token_hex(32)
    token_file.write_text(token)
    token_file.chmod(0o600)
    env = local.cluster_env(mine, HEAD)  # HAProxy ingress as `augment cluster up`, if the settings ask for it
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):  # this process's cluster, in a full run
        env.pop(name, None)
    env.update({"RAY_AUTH_TOKEN_PATH": str(token_file), "AUGMENT_RAY_ADDRESS": HEAD.gcs_address,
                # A node's `ray start --block` stops at once when terminated, instead of draining for up
                # to 30 s (what lets Serve move replicas off a node being scaled down; not tested here).
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"})
    if local.is_up(HEAD):
        pytest.fail(f"something already listens on {HEAD.dashboard_url}: stop it before the tests")
    temp_dir = Path(tempfile.mkdtemp(prefix="aug2n-h-", dir="/tmp"))  # short: socket paths are limited
    log = home / "head.log"
    with log.open("ab") as out:
        process = subprocess.Popen([*local.head_command(replace(HEAD, temp_dir=str(temp_dir))), "--block"],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    two = TwoNodeCluster(mine, env, token, home, Node("head", process, temp_dir, log))
    try:
        local.wait_for_dashboard(HEAD.dashboard_url)
        assert local.dashboard_auth_mode(HEAD.dashboard_url) == "token", "the head node does not ask for Ray's token"
        two.head.node_id = wait_for("the head node", lambda: next(iter(two.alive_nodes()), None), NODE_JOIN_S)
        yield two
    finally:
        for started in two.started:
            if started.poll() is None:
                started.kill()
                started.wait(timeout=10)
        if two.worker is not None:
            two.worker.stop(home)
        two.head.stop(home)


@pytest.fixture
def worker(cluster: TwoNodeCluster) -> Iterator[Node]:
    """A fresh worker node for the test; stopped after it (if the test left anything of it)."""
    node = cluster.start_worker()
    yield node
    node.stop(cluster.logs)
    cluster.worker = None


# the run -----------------------------------------------------------------------------------------
def s3_spec(cluster: TwoNodeCluster, provider_url: str) -> tuple[Path, str]:
    """A workflow over RECORDS companies (+ INVALID) read from S3: one llm step, 20 records per
    augment call and output file, 10 calls a second at most, 4 in flight."""
    name = f"two_nodes_{uuid.uuid4().hex[:6]}"
    data = io.StringIO()
    writer = csv.writer(data)
    writer.writerow(["id", "name"])
    writer.writerows([f"r{i}", f"Company {i}"] for i in range(RECORDS))
    writer.writerows(INVALID)
    key = f"input/{name}.csv"
    boto3.client("s3", endpoint_url=cluster.settings.s3_endpoint_url, region_name="us-east-1").put_object(
        Bucket=BUCKET, Key=key, Body=data.getvalue().encode())
    spec = {
        "name": name,
        "providers": {"fake": {"kind": "openai", "base_url": provider_url, "allow_hosts": ["127.0.0.1"],
                               "model": "m", "account": name,
                               "limits": {"requests_per_minute": 600, "max_in_flight": MAX_IN_FLIGHT}}},
        "source": {"kind": "csv", "path": f"s3://{BUCKET}/{key}"},
        "schema": {"key": "id", "fields": {"id": {"required": True}, "name": {}}},
        "steps": [{"use": "llm", "name": "profile", "params": {
            "provider": "fake", "user": "About {{name}}", "outputs": {"summary": {}}}}],
        "sink": {"dataset": name, "batch_rows": 20},
    }
    path = cluster.logs / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path, name


def running(driver: Command) -> bool:
    code = driver.process.poll()
    assert code is None, f"`augment run` exited {code} before the node was lost:\n{driver.output()[-3000:]}"
    return True


# Run in a subprocess (this process may be on another cluster): the account's limiter, started as the
# product starts it (a detached named actor, which runs then find), on the given node, so that losing
# that node loses the limiter every time, not when Ray happened to put it there.
PIN_LIMITER = """
import sys, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from ray.util.state import list_actors
from actors.naming import NAMESPACE, limiter_name
from actors.provider_limiter import ProviderLimiterActor
from augment_core.ratelimit import Limits
address, dashboard, node, account = sys.argv[1:]
ray.init(address=address, logging_level="ERROR")
for _ in range(5):  # soft, so that Ray restarts it elsewhere once the node is lost; soft may place it elsewhere
    limiter = ProviderLimiterActor.options(
        name=limiter_name(account), namespace=NAMESPACE, lifetime="detached",
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True)).remote(account, Limits())
    ray.get(limiter.snapshot.remote(), timeout=60)
    where = [a for a in list_actors(dashboard, filters=[("name", "=", limiter_name(account))])
             if a.state == "ALIVE"]
    if where and where[0].node_id == node:
        sys.exit(0)
    ray.kill(limiter, no_restart=True)
sys.exit("the limiter would not start on the node")
"""


def actors_on(cluster: TwoNodeCluster, node_id: str, class_part: str) -> list[dict[str, Any]]:
    return [a for a in cluster.state("actors")
            if a["state"] == "ALIVE" and a.get("node_id") == node_id and class_part in (a.get("class_name") or "")]


def assert_every_valid_record_once(cluster: TwoNodeCluster, run: RunRecord) -> None:
    assert run.status == "succeeded", run.error
    c = run.counts
    assert (c["in"], c["valid"], c["quarantined"]) == (RECORDS + len(INVALID), RECORDS, len(INVALID)), c
    assert c["in"] == c["valid"] + c["quarantined"]
    endpoint = cluster.settings.s3_endpoint_url
    assert run.output["path"].startswith(f"s3://{BUCKET}/augment/datasets/"), run.output
    fs, path = filesystem_for(run.output["path"], endpoint)
    output = pq.read_table(path, filesystem=fs, columns=["record_uuid", "id", "profile_status"])
    uuids, ids = output["record_uuid"].to_pylist(), output["id"].to_pylist()
    assert len(uuids) == len(set(uuids)) == RECORDS, f"{len(uuids)} rows, {len(set(uuids))} distinct record_uuids"
    assert sorted(ids) == sorted(f"r{i}" for i in range(RECORDS))
    assert set(output["profile_status"].to_pylist()) == {"ok"}
    assert run.output["quarantine_path"].startswith(f"s3://{BUCKET}/augment/quarantine/"), run.output
    fs, path = filesystem_for(run.output["quarantine_path"], endpoint)
    assert pq.read_table(path, filesystem=fs).num_rows == len(INVALID)
    [version] = open_store(cluster.settings).list_dataset_versions(run.output["dataset"])
    assert (version.row_count, version.run_id, version.path) == (RECORDS, run.id, run.output["path"])


def test_a_run_that_loses_the_worker_node_ends_with_every_valid_record_once(
        cluster: TwoNodeCluster, worker: Node) -> None:
    """The worker node holds an augment actor and the provider account's limiter when its raylet is
    killed. Either the run carries on to success (what it did here, about 37 s after the kill), or
    it fails with its reason and `augment resume` finishes it: either way every valid record is in
    the S3 output once, and calls answered before the kill are not sent again."""
    store = open_store(cluster.settings)
    with FakeOpenAI(latency_ms=(200, 300)) as fake:
        spec_path, name = s3_spec(cluster, fake.base_url)
        pinned = subprocess.run([sys.executable, "-c", PIN_LIMITER, HEAD.gcs_address, HEAD.dashboard_url,
                                 worker.node_id, name], env=cluster.env, cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert pinned.returncode == 0, pinned.stderr[-3000:]
        driver = cluster.cli("run", str(spec_path), "--json")
        [run] = wait_for("the run's row", lambda: store.list_runs(workflow=name, limit=1), 60)
        paths = StoragePaths(cluster.settings)
        output = paths.filesystem(paths.dataset_run(name, run.id))
        # Mid-run: the worker node holds a Ray Data augment actor, and some records are durable.
        wait_for("an augment actor on the worker node",
                 lambda: running(driver) and actors_on(cluster, worker.node_id, "AugmentBatches"), 120)
        wait_for("40 durable output records on S3",
                 lambda: running(driver) and complete_parquet_rows(*output) >= 40, 120)
        # The driver joined the head (Ray's choice when nodes share a host), and the coordinator runs beside it.
        assert actors_on(cluster, cluster.head.node_id, "RunCoordinator"), "the run's coordinator is not on the head"
        killed_at = cluster.kill_worker_raylet()
        written_before = complete_parquet_rows(*output)
        assert written_before < RECORDS, "the run ended before the node was lost: make it longer"

        try:
            code = driver.process.wait(timeout=RUN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run neither finished nor failed {RUN_S}s after its worker node was lost"
                        f" (status {store.get_run(run.id).status}); see {driver.log}")
        ended_s = time.monotonic() - killed_at
        run = store.get_run(run.id)
        outcome = f"run {run.status} {ended_s:.0f}s after the kill (exit {code}), {written_before} records durable then"
        if run.status == "failed":  # cleanly: with its reason, and resumable to exactly once
            assert code == 1 and run.error, outcome
            resumed, shown = cluster.cli_done("resume", run.id, "--json")
            assert resumed == 0, f"{outcome}; then `augment resume` exited {resumed}:\n{shown[-3000:]}"
            run = store.get_run(run.id)
            assert run.resumes == 1
            outcome += f", resumed: {run.status}"
        else:
            assert code == 0, f"{outcome}:\n{driver.output()[-3000:]}"
        sent = fake.stats()["requests"]
        print(outcome, f"; provider requests: {sent}")
    assert_every_valid_record_once(cluster, run)
    assert RECORDS <= sent <= RECORDS + MAX_IN_FLIGHT, f"{sent} provider requests for {RECORDS} records"


# the API -----------------------------------------------------------------------------------------
def api_config(cluster: TwoNodeCluster) -> Path:
    """configs/serve.yaml's API alone: two replicas, at most one a node, naming themselves."""
    config = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text(encoding="utf-8"))
    [api] = [app for app in config["applications"] if app["name"] == "api"]
    api["args"] = {**(api.get("args") or {}), "replica_header": True}
    [deployment] = api["deployments"]
    deployment.pop("autoscaling_config", None)
    deployment.update(num_replicas=2, max_replicas_per_node=1)
    config["applications"] = [api]
    path = cluster.logs / "serve-api.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def replicas(cluster: TwoNodeCluster) -> dict[str, str]:
    """replica id -> node id of the API's running replicas, from Serve's own view (the dashboard)."""
    apps = cluster.rest("/api/serve/applications/").get("applications") or {}
    deployment = ((apps.get("api") or {}).get("deployments") or {}).get("AugmentApi") or {}
    return {r["replica_id"]: r["node_id"] for r in deployment.get("replicas") or [] if r["state"] == "RUNNING"}


@dataclass
class Answer:
    at: float
    ok: bool
    replica: str | None
    what: str


def ask(http: httpx.Client, url: str) -> Answer:
    started = time.monotonic()
    try:
        answer = http.get(url)
        # 200 from health: the replica reached its metadata store; from runs: the caller's key checked too.
        return Answer(started, answer.status_code == 200, answer.headers.get(REPLICA_HEADER), str(answer.status_code))
    except httpx.HTTPError as exc:
        return Answer(started, False, None, type(exc).__name__)


def test_the_api_keeps_answering_when_a_node_is_lost(cluster: TwoNodeCluster, worker: Node) -> None:
    """HAProxy (the default ingress) on the head, in front of one API replica on each node
    (`proxy_location: HeadOnly`: a proxy on each node would take the same port of this one machine).
    The whole worker node is killed, as a machine is lost, while requests go one after another."""
    code, shown = cluster.cli_done("serve", "--config", str(api_config(cluster)), "--port", str(SERVE_PORT),
                                   "--address", cluster.dashboard, timeout_s=240)
    assert code == 0, shown[-3000:]
    try:
        placed = wait_for("one API replica on each node", lambda: (r := replicas(cluster)) and
                          sorted(r.values()) == sorted([cluster.head.node_id, worker.node_id]) and r, 60)
        on_worker = next(r for r, node in placed.items() if node == worker.node_id)
        key = api_key(cluster.settings, "viewer")
        base = f"http://127.0.0.1:{SERVE_PORT}/api/v1"
        with httpx.Client(timeout=5, headers={"Authorization": f"Bearer {key}"}) as http:
            before: list[Answer] = []

            def both_answering() -> bool:
                """HAProxy takes a replica in a moment after Serve reports it running (its config is
                rewritten, the new server health-checked): until then every request reaches the other."""
                before.append(ask(http, f"{base}/runs?limit=1"))
                return {a.replica for a in before} == set(placed)

            wait_for("requests answered by both nodes' replicas", both_answering, 30, every_s=0.05)
            assert all(a.ok for a in before), [a.what for a in before]

            killed_at = cluster.kill_worker_node()
            after: list[Answer] = []
            marked_dead: list[float] = []

            def answering_again() -> bool:
                """Asked one after the other, through the whole switch: until Ray has marked the
                node dead (Serve then drops its replica) and 40 answers in a row came after that."""
                after.append(ask(http, f"{base}/runs?limit=1"))
                after.append(ask(http, f"{base}/health"))
                if not marked_dead and cluster.worker_dead():
                    marked_dead.append(time.monotonic())
                since = [a for a in after if marked_dead and a.at > marked_dead[0]]
                return len(since) >= 40 and all(a.ok for a in since[-40:])

            wait_for("the worker node marked dead, then 40 answers in a row", answering_again, API_BACK_S,
                     every_s=0.05)
        failed = [a for a in after if not a.ok]
        print(f"after the node was lost: {len(after)} requests in {after[-1].at - killed_at:.1f}s, {len(failed)}"
              f" failed {sorted({a.what for a in failed})}, the last {(failed or after)[-1].at - killed_at:.1f}s"
              f" after it; marked dead {marked_dead[0] - killed_at:.1f}s after it")
        assert not [a for a in after if a.ok and a.replica == on_worker], "the lost node's replica answered"
        assert len(failed) <= len(after) // 10, f"more than 1 in 10 requests failed: {[a.what for a in after]}"
    finally:
        code, shown = cluster.cli_done("serve", "--stop", "--address", cluster.dashboard, timeout_s=120)
        assert code == 0, shown[-3000:]
