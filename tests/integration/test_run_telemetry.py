"""A run's traces and logs from every process of a real cluster: a head node of its own (its own
ports and temp folder; the session's cluster keeps this process) started with the standard
OTEL_* variables pointing at an OTLP/HTTP receiver here and AUGMENT_LOG_FORMAT=json, and
`augment run` as a user types it, with a provider key in its environment.

The receiver decodes what the coordinator and the Ray Data workers export: one trace from the run
through its steps and batches to every provider call. The cluster's log files hold the run's
warning as one JSON object per line, and no file anywhere (the CLI's output, every log of the
cluster) holds the provider's key."""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from augment_core.settings import Settings
from cluster import local
from devtools.fake_openai import FakeOpenAI
from tests.conftest import ROOT, _test_port

CLUSTER = local.LocalCluster(
    dashboard_port=_test_port(8400), gcs_port=_test_port(6411), client_server_port=_test_port(9031),
    agent_port=_test_port(52400), metrics_port=_test_port(8404), num_cpus=2)
KEY_ENV = "AUGMENT_TEST_TELEMETRY_KEY"
KEY = f"sk-telemetry-{uuid.uuid4().hex}"
RECORDS = 6


class OtlpReceiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace endpoint (protobuf) that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: OtlpReceiver

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        self.server.spans.append({
                            "name": span.name, "trace": span.trace_id.hex(), "id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(), "status": span.status.code,
                            "attributes": {a.key: _value(a.value) for a in span.attributes}})
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def traced_cluster(receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory,
                   ) -> Iterator[tuple[dict[str, str], Path]]:
    """The cluster's environment (for `augment run`) and its temp folder."""
    home = tmp_path_factory.mktemp("telemetry")
    temp = Path(f"/tmp/augment-telemetry-{uuid.uuid4().hex[:6]}")  # Ray's socket paths must stay short
    cluster = local.LocalCluster(**{**CLUSTER.__dict__, "temp_dir": str(temp)})
    settings = Settings(storage_root=str(home / "data"), database_url=f"sqlite:///{home / 'augment.db'}",
                        redis_url=None, log_format="json")
    telemetry = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": "augment-test",
                 "OTEL_BSP_SCHEDULE_DELAY": "500"}
    if local.is_up(cluster):
        pytest.fail(f"something already listens on {cluster.dashboard_url}")
    with pytest.MonkeyPatch.context() as env:  # the head node's environment, which every process inherits
        for name, value in telemetry.items():
            env.setenv(name, value)
        head = local.start_attached(settings, cluster, home / "head.log")
        environment = {**local.cluster_env(settings, cluster), "AUGMENT_RAY_ADDRESS": cluster.gcs_address}
    try:
        yield environment, temp
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        subprocess.run(["pkill", "-9", "-f", str(temp)], check=False)


@pytest.fixture(scope="module")
def cli_run(traced_cluster: tuple[dict[str, str], Path], fake_providers: Any,
            tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """`augment run` of an llm workflow whose record r1 only ever gets 500s, the key exported."""
    environment, _ = traced_cluster
    fake: FakeOpenAI = fake_providers(api_key=KEY)
    folder = tmp_path_factory.mktemp("telemetry-run")
    with (folder / "in.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name"])
        writer.writerows([f"r{i}", f"Company {i}" + (" #500x99" if i == 1 else "")] for i in range(RECORDS))
    providers = folder / "providers.yaml"
    providers.write_text(yaml.safe_dump({"providers": {"fake": {
        "kind": "openai", "base_url": fake.base_url, "allow_hosts": ["127.0.0.1"], "model": "m",
        "api_key_env": KEY_ENV, "max_retries": 1, "account": f"telemetry_{uuid.uuid4().hex[:6]}"}}}),
        encoding="utf-8")
    spec = folder / "traced.yaml"
    spec.write_text(yaml.safe_dump({
        "name": f"traced_{uuid.uuid4().hex[:6]}",
        "source": {"kind": "csv", "path": str(folder / "in.csv")},
        "schema": {"key": "id", "fields": {"id": {"required": True}, "name": {}}},
        "steps": [{"use": "llm", "name": "profile", "params": {
            "provider": "fake", "user": "About {{name}}", "outputs": {"summary": {}}}}],
        "sink": {"dataset": f"traced_{uuid.uuid4().hex[:6]}"},
        "max_failed_share": 0.5}), encoding="utf-8")
    env = {**environment, "AUGMENT_PROVIDERS_FILE": str(providers), KEY_ENV: KEY}
    augment = str(Path(os.environ.get("VIRTUAL_ENV") or ROOT / ".venv") / "bin" / "augment")
    return subprocess.run([augment, "run", str(spec)], env=env, capture_output=True, text=True, timeout=300,
                          cwd=folder)


def test_one_trace_runs_from_the_run_through_its_steps_and_batches_to_every_provider_call(
        cli_run: subprocess.CompletedProcess[str], receiver: OtlpReceiver) -> None:
    assert cli_run.returncode == 0, cli_run.stdout + cli_run.stderr
    with receiver.lock:
        spans = list(receiver.spans)
    [run] = [s for s in spans if s["name"] == "augment.run"]
    assert run["attributes"]["augment.run.status"] == "succeeded"
    assert run["attributes"]["augment.records.in"] == RECORDS and run["attributes"]["augment.records.failed"] == 1
    trace = [s for s in spans if s["trace"] == run["trace"]]
    by_id = {s["id"]: s for s in trace}
    steps = {s["attributes"]["augment.step"]: s for s in trace if s["name"] == "augment.step"}
    assert set(steps) == {"validate", "profile", "write"}
    assert all(s["parent"] == run["id"] for s in steps.values())
    batches = [s for s in trace if s["name"] == "augment.step.batch"]
    assert batches and all(by_id[b["parent"]]["name"] == "augment.step" for b in batches)  # from the workers
    calls = [s for s in trace if s["name"] == "augment.provider_call"]
    assert len(calls) == RECORDS and all(by_id[c["parent"]]["name"] == "augment.step.batch" for c in calls)
    assert sum(1 for c in calls if c["status"] == 2) == 1  # STATUS_CODE_ERROR: r1's 500s
    assert KEY not in json.dumps(spans)


def test_the_clusters_logs_are_json_lines_and_nothing_holds_the_key(
        cli_run: subprocess.CompletedProcess[str], traced_cluster: tuple[dict[str, str], Path]) -> None:
    _, temp = traced_cluster
    assert KEY not in cli_run.stdout + cli_run.stderr
    files = [p for p in temp.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) > 10
    assert [str(p) for p in files if KEY.encode() in p.read_bytes()] == []
    ours = []  # augment's log lines in every process's output: each a JSON object with the fields
    for path in temp.rglob("logs/*"):
        if path.suffix in (".err", ".out", ".log") and path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if '"logger": "actors.' in line or '"logger": "pipelines.' in line:
                    ours.append(json.loads(line[line.index("{"):]))
    assert ours, "no log line of augment's in the cluster's logs"
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in ours)
    finished = [e for e in ours if "records failed" in e["message"]]
    assert finished and finished[0]["run_id"] and finished[0]["level"] == "WARNING"
