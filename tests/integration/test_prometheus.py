"""A real Prometheus (Debian's package, `make system-deps`) scrapes the session's cluster with the
shipped configuration (cluster/prometheus/prometheus.yml: Ray's service-discovery file, the alert
rules), while a workflow with an llm step runs against the project's fake provider: the scraped
counters equal what the run stored and what the provider saw, the API's requests arrive by route,
status and key prefix, the rules load, and no secret (the provider's key, an API key) is in any
series or in any log file of the cluster."""

from __future__ import annotations

import csv
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
import yaml

from actors.runs import start_run
from augment_core.settings import Settings
from augment_core.store import RunRecord, open_store
from cluster.local import SERVICE_DISCOVERY_FILE
from devtools.fake_openai import FakeOpenAI
from pipelines.workflows.loader import parse_spec
from tests.conftest import REQUIRE_SERVICES, ROOT, TEST_METRICS_PORT, _test_port, api_key

PROMETHEUS_PORT = _test_port(8393)
PROVIDER_KEY_ENV = "AUGMENT_TEST_PROMETHEUS_PROVIDER_KEY"
PROVIDER_KEY = f"sk-prom-{uuid.uuid4().hex}"  # must appear in no series and no log line
RECORDS = 12
WAIT_S = 150.0


@pytest.fixture(scope="module")
def prometheus(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus with the shipped config, scraping and judging every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        if REQUIRE_SERVICES:
            pytest.fail("prometheus is missing: `make system-deps` installs Debian's package")
        pytest.skip("prometheus is not installed (make system-deps)")
    folder = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((ROOT / "cluster" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    [job] = config["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == [str(SERVICE_DISCOVERY_FILE)]  # what `augment cluster up` says
    # Every 5 s, not faster: a scrape may take no longer than its interval, and with the whole suite's
    # replicas and workers on one node the exporter's answer took more than 1 s (nothing arrived).
    config["global"] = {"scrape_interval": "5s", "scrape_timeout": "5s", "evaluation_interval": "5s"}
    job["file_sd_configs"][0]["refresh_interval"] = "1s"
    config["rule_files"] = [str(ROOT / "cluster" / "prometheus" / "alerts.yml")]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    url = f"http://127.0.0.1:{PROMETHEUS_PORT}"
    with (folder / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for("Prometheus to answer", lambda: _ready(url), 60)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"waited {timeout:g}s for {what}; last: {last!r}")


def arrives(url: str, what: str, expr: str, label: str, expected: dict[str, float]) -> None:
    """Wait until the query's values by `label` are `expected`; on timeout say what Prometheus held
    and how its scrapes of the cluster went."""
    seen: dict[str, float] = {}

    def matches() -> bool:
        nonlocal seen
        seen = by(url, expr, label)
        return seen == expected

    try:
        wait_for(what, matches)
    except AssertionError:
        targets = httpx.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        health = [(t["scrapeUrl"], t["health"], t.get("lastError"), t.get("lastScrapeDuration")) for t in targets]
        raise AssertionError(f"{what}: expected {expected}, Prometheus held {seen}; scrapes: {health}") from None


def query(url: str, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
    """An instant query's result: labels -> value."""
    reply = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert reply["status"] == "success", reply
    return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in reply["data"]["result"]}


def by(url: str, expr: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for labels, value in query(url, expr).items()}


@pytest.fixture(scope="module")
def llm_run(ray_cluster, settings: Settings, fake_providers: Callable[..., FakeOpenAI],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunRecord, FakeOpenAI]]:
    """A run of an llm workflow with a key, whose record r1 draws one 429 and r2 only 500s, and one
    bad row that is quarantined."""
    fake = fake_providers(api_key=PROVIDER_KEY, retry_after_s=0.1)
    folder = tmp_path_factory.mktemp("prom-run")
    name = f"prom_{uuid.uuid4().hex[:6]}"
    with (folder / "in.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name", "employees"])
        markers = {1: " #429x1", 2: " #500x99"}
        writer.writerows([f"r{i}", f"Company {i}{markers.get(i, '')}", str(10 + i)] for i in range(RECORDS))
        writer.writerow(["r-bad", "Bad Inc", "many"])  # not an int: quarantined
    # A provider with a key is the operator's to declare (a providers file), never a workflow's.
    providers = folder / "providers.yaml"
    providers.write_text(yaml.safe_dump({"providers": {"fake": {
        "kind": "openai", "base_url": fake.base_url, "allow_hosts": ["127.0.0.1"], "model": "m",
        "account": name, "api_key_env": PROVIDER_KEY_ENV, "max_retries": 2,
        "limits": {"requests_per_minute": 6000},
        "prices": {"input_per_million": 1000.0, "output_per_million": 2000.0}}}}), encoding="utf-8")
    spec = {
        "name": name,
        "source": {"kind": "csv", "path": str(folder / "in.csv")},
        "schema": {"key": "id", "fields": {"id": {"required": True}, "name": {},
                                           "employees": {"type": "integer"}}},
        "steps": [{"use": "llm", "name": "profile", "params": {
            "provider": "fake", "user": "About {{name}}", "outputs": {"summary": {}}}}],
        "sink": {"dataset": name},
        "max_failed_share": 0.5,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    loaded = parse_spec(spec, str(path), folder, providers_file=providers)
    # The key in the driver's environment only, as after `export` in a user's shell.
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PROVIDER_KEY_ENV, PROVIDER_KEY)
        run_id, (_, final) = start_run(settings, loaded, str(path))
    ray.get(final, timeout=300)
    yield open_store(settings).get_run(run_id), fake


def test_a_real_prometheus_scrapes_the_runs_counts_and_the_providers_calls(
        prometheus: str, llm_run: tuple[RunRecord, FakeOpenAI]) -> None:
    run, fake = llm_run
    assert run.status == "succeeded", run.error
    assert run.counts["in"] == RECORDS + 1 and run.counts["quarantined"] == 1 and run.counts["failed"] == 1
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    ours = [t for t in targets if t["labels"]["instance"].endswith(f":{TEST_METRICS_PORT}")]
    assert ours, f"the cluster's metrics port is not among the discovered targets: {targets}"
    workflow = f'workflow="{run.workflow}"'

    expected = {k: float(v) for k, v in run.counts.items() if v}
    arrives(prometheus, "the run's records", f"sum by (outcome) (ray_augment_records_total{{{workflow}}})", "outcome",
            expected)
    assert by(prometheus, f"sum by (status) (ray_augment_runs_total{{{workflow}}})", "status") == {"succeeded": 1}
    [step] = [s for s in run.steps if s.name == "profile"]
    steps = by(prometheus, f'sum by (outcome) (ray_augment_step_records_total{{{workflow}, step="profile"}})',
               "outcome")
    assert steps == {"ok": step.rows - step.failed - step.skipped, "error": step.failed}
    assert query(prometheus, f"sum(ray_augment_run_duration_seconds_count{{{workflow}}})") == {(): 1.0}

    # Every attempt the provider answered, by its reply, as the provider itself counted them.
    account = f'account="{run.workflow}"'
    statuses = fake.stats()["by_status"]
    seen = {"ok": float(statuses["200"]), "rate_limited": float(statuses["429"]), "error": float(statuses["500"])}
    assert seen["rate_limited"] == 1 and seen["error"] == 3  # r2: the first try and 2 retries
    arrives(prometheus, "the provider's calls", f"sum by (outcome) (ray_augment_provider_requests_total{{{account}}})",
            "outcome", seen)
    cost = run.cost or {}
    totals = cost["steps"]["profile"]
    assert query(prometheus, f"sum(ray_augment_provider_tokens_total{{{account}}})") == {
        (): float(totals["tokens_in"] + totals["tokens_out"])}
    [(_, scraped_cost)] = query(prometheus, f"sum(ray_augment_provider_cost_usd_total{{{account}}})").items()
    assert scraped_cost == pytest.approx(cost["total_usd"], abs=1e-6)
    assert by(prometheus, f"sum by (result) (ray_augment_cache_lookups_total{{{account}}})", "result") == {
        "miss": float(RECORDS)}
    assert query(prometheus, f"sum(ray_augment_provider_latency_seconds_count{{{account}}})") == {
        (): sum(seen.values())}
    assert query(prometheus, f"max(ray_augment_provider_circuit_open{{{account}}})") == {(): 0.0}
    assert query(prometheus, f"max(ray_augment_provider_limit_per_second{{{account}}})") == {(): 100.0}


def test_the_api_counts_requests_by_route_status_and_key_prefix_and_the_rules_load(
        prometheus: str, base_url: str, settings: Settings) -> None:
    key = api_key(settings, "viewer")
    prefix = key.split("_")[0] + "_" + key.split("_")[1]
    with httpx.Client(base_url=f"{base_url}/api/v1", timeout=30) as http:
        for _ in range(3):
            assert http.get("/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert http.get("/runs/no-such-run", headers={"Authorization": f"Bearer {key}"}).status_code == 404
        assert http.get("/me").status_code == 401
    labels = f'caller="{prefix}"'
    arrives(prometheus, "the API's requests", f"sum by (status) (ray_augment_api_requests_total{{{labels}}})",
            "status", {"200": 3.0, "404": 1.0})
    assert set(by(prometheus, f"sum by (route) (ray_augment_api_requests_total{{{labels}}})", "route")) == {
        "/v1/me", "/v1/runs/{run_id}"}
    assert query(prometheus, 'sum(ray_augment_api_requests_total{route="/v1/me", status="401", caller="anonymous"})')
    assert query(prometheus, 'sum(ray_augment_api_request_seconds_count{route="/v1/me"})')

    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {rule["name"]: rule["health"] for group in rules for rule in group["rules"]}
    assert "AugmentRunFailed" in loaded and set(loaded.values()) == {"ok"}, loaded

    secret = key.split("_", 2)[2]
    exported = httpx.get(f"http://127.0.0.1:{TEST_METRICS_PORT}/metrics", timeout=30).text
    assert "ray_augment_api_requests_total" in exported
    assert secret not in exported and PROVIDER_KEY not in exported


def test_no_log_file_of_the_cluster_holds_the_providers_key(llm_run: tuple[RunRecord, FakeOpenAI]) -> None:
    """Every log of the session's cluster — the coordinator, the Ray Data workers that called the
    provider with the key, the raylet, the driver's — read whole."""
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # type: ignore[attr-defined]
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert len(files) > 10
    holding = [str(p) for p in files if PROVIDER_KEY.encode() in p.read_bytes()]
    assert holding == []
