"""Runs with llm steps on the session cluster against the fake OpenAI server: counts, provenance
and cost; the cache; the budget; the circuit; the cluster-wide rate limit; and previews.

Runs are slow to start (Ray Data), so the runs that call servers of their own — the run with
faults, the budget and the circuit — start together with the module and run while the cache
test runs its own; their tests then only read the results. The rate-limit test runs alone.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray
import yaml

from actors.provider_limiter import cluster_permits
from actors.runs import start_run
from augment_core.settings import Settings
from augment_core.store import RunRecord, open_store
from devtools.fake_openai import FakeOpenAI
from pipelines.engine.inprocess import InProcessEngine
from pipelines.inference.context import RunContext
from pipelines.workflows.loader import load_spec, parse_spec
from tests.integration.conftest import run_spec

PRICES = {"input_per_million": 0.15, "output_per_million": 0.60}
OUTPUTS = {
    "industry": {"description": "Main industry.", "enum": ["software", "retail", "finance", "other"]},
    "pitch": {"description": "One sentence on what it does."},
    "b2b": {"type": "boolean"},
}
SCHEMA = {
    "key": "org_id",
    "fields": {
        "org_id": {"type": "string", "required": True, "regex": "ORG-\\d{3}"},
        "name": {"type": "string", "required": True},
        "note": {"type": "string"},
        "employees": {"type": "integer", "min": 1},
    },
}
INVALID_ROWS = [
    {"org_id": "BAD-1", "name": "Bad Id", "note": "", "employees": "3"},
    {"org_id": "ORG-901", "name": "", "note": "no name", "employees": "3"},
    {"org_id": "ORG-902", "name": "Many", "note": "", "employees": "many"},
    {"org_id": "ORG-903", "name": "Nobody", "note": "", "employees": "0"},
]


FAKE_PROVIDER = {"retry_after_s": 0.2, "timeout_sleep_s": 2.0}  # the `fake` server of tests/conftest.py


@pytest.fixture(autouse=True)
def clean(fake: FakeOpenAI) -> None:
    fake.configure(rpm=None, tpm=None, latency_ms=(0, 0))
    fake.reset()


def unique(tag: str) -> str:
    return f"{tag}_{uuid.uuid4().hex[:8]}"


def rows(n: int, note: str, markers: dict[int, str] | None = None) -> list[dict[str, str]]:
    markers = markers or {}
    return [{"org_id": f"ORG-{i:03d}", "name": f"Company {i}", "note": f"{note} {i} {markers.get(i, '')}".strip(),
             "employees": str(i + 1)} for i in range(n)]


def write_csv(path: Path, records: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["org_id", "name", "note", "employees"])
        writer.writeheader()
        writer.writerows(records)
    return path


def provider(base_url: str, account: str, **changes: Any) -> dict[str, Any]:
    return {"kind": "openai", "base_url": base_url, "allow_hosts": ["127.0.0.1"], "model": "fake-small",
            "account": account, "prices": PRICES,
            "limits": {"max_in_flight": 16}, "timeout_seconds": 20, "max_retries": 3, **changes}


def llm_step(name: str, system: str, user: str = "Company: {{name}}\nNote: {{note}}\nStaff: {{employees}}",
             outputs: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
    return {"use": "llm", "name": name, "params": {
        "provider": "fake", "system": system, "user": user, "outputs": outputs or OUTPUTS, "max_tokens": 100, **params}}


def write_spec(folder: Path, name: str, csv_path: Path, providers: dict[str, Any], steps: list[dict[str, Any]],
               **extra: Any) -> Path:
    data = {"name": name, "providers": providers, "source": {"kind": "csv", "path": str(csv_path)},
            "schema": SCHEMA, "steps": steps, "sink": {"dataset": name}, **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def output_rows(run: RunRecord) -> dict[str, dict[str, Any]]:
    return {row["org_id"]: row for row in pq.read_table(run.output["path"]).to_pylist()}


def provenance(row: dict[str, Any], step: str = "profile") -> dict[str, Any]:
    return json.loads(row[f"{step}_provenance"])


def assert_reconciles(run: RunRecord) -> None:
    c = run.counts
    assert c["in"] == c["valid"] + c["quarantined"]
    assert c["augmented"] + c["failed"] + c["skipped"] == c["valid"]


# runs started with the module ---------------------------------------------------------------------
@dataclass
class Pending:
    run_id: str
    final: Any

    def result(self, settings: Settings) -> RunRecord:
        ray.get(self.final, timeout=300)
        return open_store(settings).get_run(self.run_id)


def start(settings: Settings, spec: Path, providers_file: Path | None = None) -> Pending:
    loaded = load_spec(spec) if providers_file is None else parse_spec(
        yaml.safe_load(spec.read_text(encoding="utf-8")), str(spec), spec.parent, providers_file=providers_file)
    run_id, (_, final) = start_run(settings, loaded, str(spec))
    return Pending(run_id, final)


def operator_file(folder: Path, providers: dict[str, Any]) -> Path:
    """A providers file of the operator's: only its providers may name a key."""
    path = folder / "providers.yaml"
    path.write_text(yaml.safe_dump({"providers": providers}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def faults_fake(fake_providers: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return fake_providers(retry_after_s=0.2)


@pytest.fixture(scope="module")
def budget_fake(fake_providers: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return fake_providers()


RUN_KEY_ENV, RUN_KEY = "AUGMENT_TEST_RUN_KEY", "sk-test-run-key-5b1e7c"


@pytest.fixture(scope="module")
def keyed_fake(fake_providers: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return fake_providers(api_key=RUN_KEY)


def keyed_spec(folder: Path, fake: FakeOpenAI, name: str) -> tuple[Path, Path]:
    """(the spec, the providers file declaring its keyed provider)."""
    data = write_csv(folder / "in.csv", rows(8, name))
    file = operator_file(folder, {"fake": provider(fake.base_url, unique("keyed"), api_key_env=RUN_KEY_ENV)})
    return write_spec(folder, name, data, {}, [llm_step("profile", f"Profile ({name}).")]), file


@pytest.fixture(scope="module", autouse=True)
def early_runs(ray_cluster, settings: Settings, faults_fake: FakeOpenAI, budget_fake: FakeOpenAI,
               keyed_fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pending]:
    keyless = start(settings, *keyed_spec(tmp_path_factory.mktemp("keyless"), keyed_fake, unique("llm_keyless")))
    # The key is in the driver's environment only, as after `export` in a user's shell: the
    # cluster's workers, started before, never had it.
    os.environ[RUN_KEY_ENV] = RUN_KEY
    try:
        keyed = start(settings, *keyed_spec(tmp_path_factory.mktemp("keyed"), keyed_fake, unique("llm_keyed")))
    finally:
        del os.environ[RUN_KEY_ENV]
    return {"faults": start(settings, faults_spec(tmp_path_factory.mktemp("faults"), faults_fake)),
            "budget": start(settings, budget_spec(tmp_path_factory.mktemp("budget"), budget_fake)),
            "down": start(settings, down_spec(tmp_path_factory.mktemp("down"))),
            "keyed": keyed, "keyless": keyless}


def test_workers_get_the_drivers_key_from_the_run_and_it_is_stored_nowhere(
        settings: Settings, keyed_fake: FakeOpenAI, early_runs: dict[str, Pending]) -> None:
    run = early_runs["keyed"].result(settings)
    assert run.status == "succeeded", run.error
    assert run.counts["augmented"] == 8 and run.counts["failed"] == 0
    assert keyed_fake.stats()["by_status"].get("401") is None
    stored = json.dumps(run.model_dump(mode="json")) + json.dumps([r for r in output_rows(run).values()], default=str)
    assert RUN_KEY not in stored


def test_a_run_whose_key_is_not_set_fails_before_any_call_naming_the_variable(
        settings: Settings, early_runs: dict[str, Pending]) -> None:
    run = early_runs["keyless"].result(settings)
    assert run.status == "failed"
    assert RUN_KEY_ENV in run.error and "not set" in run.error
    assert run.error.startswith("step 'setup' failed")


# the cache -------------------------------------------------------------------------------------
def test_an_unchanged_rerun_calls_nothing_and_an_edited_step_recalls_only_itself(
        ray_cluster, settings: Settings, fake: FakeOpenAI, tmp_path: Path) -> None:
    name = unique("llm_cache")
    data = write_csv(tmp_path / "orgs.csv", rows(20, name))
    providers = {"fake": provider(fake.base_url, unique("acct"))}
    steps = [
        llm_step("first", f"Classify ({name}).", outputs={"industry": OUTPUTS["industry"]}),
        llm_step("second", f"Pitch ({name}).", outputs={"pitch": OUTPUTS["pitch"]}),
    ]
    spec = write_spec(tmp_path, name, data, providers, steps)

    first = run_spec(settings, spec)
    assert first.status == "succeeded", first.error
    assert fake.stats()["requests"] == 40
    before = output_rows(first)

    # The unchanged workflow and one with the second step's template edited, side by side: both
    # read what the first run cached.
    steps[1]["params"]["user"] = "Write a pitch for {{name}} ({{note}})."
    (tmp_path / "edited").mkdir()
    edited_spec = write_spec(tmp_path / "edited", name, data, providers, steps)
    fake.reset()
    pending = start(settings, spec), start(settings, edited_spec)
    again, edited = (p.result(settings) for p in pending)

    assert again.status == "succeeded", again.error
    assert again.cost["steps"]["first"]["calls"] == 0 and again.cost["steps"]["second"]["calls"] == 0
    assert again.cost["steps"]["first"]["cache_hits"] == 20 and again.cost["steps"]["second"]["cache_hits"] == 20
    assert again.cost["total_usd"] == 0 and again.counts["augmented"] == 20
    after = output_rows(again)
    assert set(after) == set(before)
    for org_id, row in after.items():
        for step in ("first", "second"):
            p = provenance(row, step)
            assert row[f"{step}_status"] == "ok" and p["cache_hit"] is True and p["attempts"] == 0
            assert p["run_id"] == again.id
        assert (row["industry"], row["pitch"]) == (before[org_id]["industry"], before[org_id]["pitch"])

    assert edited.status == "succeeded", edited.error
    assert edited.cost["steps"]["first"]["cache_hits"] == 20 and edited.cost["steps"]["first"]["calls"] == 0
    assert edited.cost["steps"]["second"]["calls"] == 20 and edited.cost["steps"]["second"]["cache_hits"] == 0
    for row in output_rows(edited).values():
        assert provenance(row, "first")["cache_hit"] is True
        assert provenance(row, "second")["cache_hit"] is False and row["second_status"] == "ok"
    # The provider saw the edited step's 20 requests, and not one more.
    assert fake.stats()["requests"] == 20


# a run: counts, provenance, cost, failures with their reason -------------------------------------
MARKERS = {3: "#400", 7: "#400", 11: "#500x1", 13: "#429x1", 17: "#badschemax1"}


def faults_spec(folder: Path, fake: FakeOpenAI) -> Path:
    name = unique("llm_run")
    data = write_csv(folder / "orgs.csv", rows(30, name, MARKERS) + INVALID_ROWS)
    return write_spec(folder, name, data, {"fake": provider(fake.base_url, unique("acct"))},
                      [llm_step("profile", f"Profile the company ({name}).")])


def test_a_run_with_an_llm_step_reconciles_and_records_provenance_and_cost(
        settings: Settings, faults_fake: FakeOpenAI, early_runs: dict[str, Pending]) -> None:
    fake, markers = faults_fake, MARKERS
    run = early_runs["faults"].result(settings)

    assert run.status == "succeeded", run.error
    assert run.counts == {"in": 34, "valid": 30, "quarantined": 4, "augmented": 28, "failed": 2, "skipped": 0}
    assert_reconciles(run)
    assert [s.state for s in run.steps] == ["succeeded"] * len(run.steps)

    out = output_rows(run)
    assert len(out) == 30
    for column in ("industry", "pitch", "b2b", "profile_status", "profile_error", "profile_provenance"):
        assert column in next(iter(out.values()))
    for org_id, row in out.items():
        p = provenance(row)
        assert p["run_id"] == run.id
        assert p["augmenter"] == "llm" and p["provider"] == "fake" and p["model"] == "fake-small"
        assert p["cache_hit"] is False
        i = int(org_id[4:])
        if markers.get(i) == "#400":
            assert row["profile_status"] == "error"
            assert row["profile_error"] == "HTTP 400: bad request: marker #400"
            assert row["industry"] is None and row["pitch"] is None and row["b2b"] is None
        else:
            assert row["profile_status"] == "ok", row["profile_error"]
            assert row["industry"] in OUTPUTS["industry"]["enum"] and isinstance(row["b2b"], bool)
            assert p["attempts"] == (2 if i in markers else 1)
            assert p["tokens_in"] > 0 and p["tokens_out"] > 0 and p["cost_usd"] > 0

    cost = run.cost
    assert cost is not None and cost["budget_usd"] is None and cost["budget_exhausted"] is False
    step = cost["steps"]["profile"]
    provs = [provenance(r) for r in out.values()]
    assert step["calls"] == sum(p["attempts"] for p in provs) == fake.stats()["requests"] == 33
    assert step["failed"] == 2 and step["skipped"] == 0 and step["cache_hits"] == 0
    assert step["tokens_in"] == sum(p["tokens_in"] for p in provs)
    assert step["tokens_out"] == sum(p["tokens_out"] for p in provs)
    assert step["cost_usd"] == pytest.approx(
        (step["tokens_in"] * PRICES["input_per_million"] + step["tokens_out"] * PRICES["output_per_million"]) / 1e6,
        abs=2e-6)
    assert cost["total_usd"] == pytest.approx(step["cost_usd"], abs=1e-6)
    assert cost["total_usd"] > 0


# the budget ----------------------------------------------------------------------------------------
def budget_spec(folder: Path, fake: FakeOpenAI) -> Path:
    name = unique("llm_budget")
    data = write_csv(folder / "orgs.csv", rows(30, name))
    prices = {"per_request": 0.001}  # every call costs (and reserves) exactly $0.001
    return write_spec(folder, name, data, {"fake": provider(fake.base_url, unique("acct"), prices=prices)},
                      [llm_step("profile", f"Profile ({name}).")], budget={"max_usd": 0.0105})


def test_a_budget_skips_the_records_it_cannot_pay_for_and_loses_none(settings: Settings, budget_fake: FakeOpenAI,
                                                                     early_runs: dict[str, Pending]) -> None:
    run = early_runs["budget"].result(settings)

    assert run.status == "succeeded", run.error
    assert run.counts["skipped"] == 20 and run.counts["augmented"] == 10 and run.counts["failed"] == 0
    assert_reconciles(run)
    assert budget_fake.stats()["requests"] == 10
    out = output_rows(run)
    assert len(out) == 30  # nothing lost
    skipped = [r for r in out.values() if r["profile_status"] == "skipped"]
    assert len(skipped) == 20
    for row in skipped:
        assert row["profile_error"] == "skipped: budget" and row["industry"] is None
        assert provenance(row)["attempts"] == 0 and provenance(row)["run_id"] == run.id
    assert sum(r["profile_status"] == "ok" for r in out.values()) == 10
    cost = run.cost
    assert cost["budget_usd"] == 0.0105 and cost["budget_exhausted"] is True
    assert cost["total_usd"] <= 0.0105 and cost["total_usd"] == pytest.approx(0.010)
    assert cost["steps"]["profile"]["skipped"] == 20 and cost["steps"]["profile"]["calls"] == 10


# the circuit ---------------------------------------------------------------------------------------
def down_spec(folder: Path) -> Path:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    name = unique("llm_down")
    data = write_csv(folder / "orgs.csv", rows(20, name))
    down = provider(f"http://127.0.0.1:{port}/v1", unique("acct"), timeout_seconds=30, max_retries=4,
                    limits={"max_in_flight": 2, "failure_threshold": 2, "cooldown_seconds": 600})
    return write_spec(folder, name, data, {"fake": down}, [llm_step("profile", f"Profile ({name}).")])


def test_a_provider_that_is_down_fails_its_records_fast_and_the_run_still_ends(
        settings: Settings, early_runs: dict[str, Pending]) -> None:
    run = early_runs["down"].result(settings)

    # Every record failed: the run says so (and is not catalogued), with the counts and the files kept.
    assert run.status == "failed"
    assert run.error.startswith("20 of 20 records failed at a step (100%; max_failed_share is not set)"), run.error
    assert run.error.endswith("records in error by step: profile 20")
    assert run.output["partial"] is True and run.output["rows_written"] == 20 and "version" not in run.output
    profile = next(s for s in run.steps if s.name == "profile")
    assert (profile.state, profile.failed, profile.skipped) == ("succeeded", 20, 0)
    assert run.counts["failed"] == 20 and run.counts["augmented"] == 0
    assert_reconciles(run)
    out = output_rows(run)
    assert {r["profile_status"] for r in out.values()} == {"error"}
    circuit = [r for r in out.values() if "circuit open after" in r["profile_error"]]
    # Failing fast is the circuit's doing, checked by what it did rather than by a clock (a loaded
    # machine took 96 s): at most the few calls before it opened met the refused port.
    assert len(circuit) >= 15, [r["profile_error"] for r in out.values()]
    assert all(r["profile_error"] for r in out.values())
    assert run.cost["steps"]["profile"]["failed"] == 20


# one limit for the whole cluster ---------------------------------------------------------------------
def test_two_runs_and_the_online_path_share_one_rate_limit(ray_cluster, settings: Settings, fake: FakeOpenAI,
                                                           tmp_path: Path, early_runs: dict[str, Pending]) -> None:
    for pending in early_runs.values():  # alone on the cluster: other runs' load adds jitter
        ray.get(pending.final, timeout=300)
    fake.configure(rpm=600)  # 10 a second, enforced in 1-second windows
    account = unique("shared")
    # Paced at 0.8 of the limit: room for grants that reach the callers of a loaded 2-CPU CI
    # machine late (at 0.9 one request in 61 once landed in a full window), yet three callers
    # pacing alone would still offer 24/s against the server's 10.
    limits = {"requests_per_minute": 600, "max_in_flight": 32, "pace": 0.8}
    specs = []
    for which in ("a", "b"):
        name = unique(f"llm_rate_{which}")
        data = write_csv(tmp_path / f"{which}.csv", rows(25, name))
        specs.append(write_spec(tmp_path, name, data, {"fake": provider(fake.base_url, account, limits=limits)},
                                [llm_step("profile", f"Profile ({name}).")]))
    online_spec = load_spec(specs[0])
    online = InProcessEngine(online_spec, RunContext(providers=online_spec.providers, permits_for=cluster_permits))
    online_records = [{"org_id": f"ORG-{i:03d}", "name": f"Online {i}", "note": f"online {account}"}
                      for i in range(10)]

    started = [start_run(settings, load_spec(path), str(path)) for path in specs]
    deadline = time.monotonic() + 120
    while fake.stats()["requests"] == 0 and time.monotonic() < deadline:  # the runs are calling:
        time.sleep(0.05)
    results: dict[str, Any] = {}  # now requests from this process join theirs
    thread = threading.Thread(target=lambda: results.update(online=online.augment(online_records)))
    thread.start()
    assert ray.get([final for _, (_, final) in started], timeout=180) == ["succeeded", "succeeded"]
    thread.join(timeout=120)
    assert not thread.is_alive()

    stats = fake.stats()
    # Three callers, each pacing alone, would be refused about two requests in three; one
    # limiter for all of them keeps to the server's 10/s.
    assert stats["rate_limited"] == 0, stats
    assert stats["requests"] == 60
    assert max(stats["admitted_per_second"].values()) <= 10
    store = open_store(settings)
    for run_id, _ in started:
        run = store.get_run(run_id)
        assert run.counts["augmented"] == 25 and run.counts["failed"] == 0
        assert {r["profile_status"] for r in output_rows(run).values()} == {"ok"}
    assert [r["profile_status"] for r in results["online"].records] == ["ok"] * 10


# preview -------------------------------------------------------------------------------------------
def preview_json(spec: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                 rows_shown: int = 2) -> dict[str, Any]:
    from augment_cli import main as cli

    capsys.readouterr()
    assert cli.main(["preview", str(spec), "--rows", str(rows_shown), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def expected_body(system: str, user: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {
        "industry": {"type": "string", "description": "Main industry.", "enum": OUTPUTS["industry"]["enum"]},
        "pitch": {"type": "string", "description": "One sentence on what it does."},
        "b2b": {"type": "boolean"},
    }, "required": ["industry", "pitch", "b2b"], "additionalProperties": False}
    return {
        "model": "fake-small",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "record", "schema": schema, "strict": True}},
        "max_tokens": 100,
        "temperature": 0.0,
    }


def test_preview_shows_the_exact_requests_and_an_estimate_and_sends_nothing(
        ray_cluster, fake: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    name = unique("llm_preview")
    data = write_csv(tmp_path / "orgs.csv", rows(24, name) + INVALID_ROWS)
    system = f"Profile ({name})."
    spec = write_spec(tmp_path, name, data, {"fake": provider(fake.base_url, unique("acct"))},
                      [llm_step("profile", system)], budget={"max_usd": 1.0})
    shown = preview_json(spec, capsys, monkeypatch)

    assert fake.stats()["requests"] == 0  # nothing reached the provider
    assert shown["rows_in"] == 28 and shown["valid"] == 24 and shown["budget_usd"] == 1.0
    assert [(s["record"], s["step"]) for s in shown["samples"]] == [(1, "profile"), (2, "profile")]
    for i, sample in enumerate(shown["samples"]):
        assert sample["request"] == {
            "method": "POST", "url": f"{fake.base_url}/chat/completions",
            "json": expected_body(system, f"Company: Company {i}\nNote: {name} {i}\nStaff: {i + 1}"),
        }
    (step,) = shown["steps"]
    assert step["step"] == "profile" and step["provider"] == "fake" and step["model"] == "fake-small"
    assert step["requests"] == 24 and step["unbuildable"] == 0
    assert step["tokens_in"] > 0 and step["tokens_out_max"] == 24 * 100
    assert step["cost_max_usd"] > 0
    assert shown["cost_max_usd"] == pytest.approx(step["cost_max_usd"], abs=1e-6)


def test_preview_masks_the_key_and_still_estimates(ray_cluster, fake: FakeOpenAI, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-PREVIEW-" + uuid.uuid4().hex
    monkeypatch.setenv("AUGMENT_TEST_PREVIEW_KEY", secret)  # set in this process, as a user's shell would
    name = unique("llm_preview_key")
    data = write_csv(tmp_path / "orgs.csv", rows(6, name))
    file = operator_file(tmp_path, {"fake": provider(fake.base_url, unique("acct"),
                                                     api_key_env="AUGMENT_TEST_PREVIEW_KEY")})
    monkeypatch.setenv("AUGMENT_PROVIDERS_FILE", str(file))  # the operator's providers, as `augment preview` reads them
    spec = write_spec(tmp_path, name, data, {}, [llm_step("profile", f"Profile ({name}).")])
    capsys.readouterr()
    shown = preview_json(spec, capsys, monkeypatch)
    assert secret not in json.dumps(shown)
    assert [s["request"]["headers"] for s in shown["samples"]] == [{"Authorization": "***"}] * 2
    (step,) = shown["steps"]
    assert step["unbuildable"] == 0 and step["requests"] == 6 and step["tokens_in"] > 0
    assert fake.stats()["requests"] == 0
