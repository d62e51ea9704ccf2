"""How close `llm` steps get to a provider's binding limit — without 429s, and losing nothing.

One local OpenAI-compatible server (devtools/fake_openai.py) enforces requests/min and
tokens/min in fixed 1-second windows (rpm/60 and tpm/60 each; tokens are the prompt plus the
completion, as `usage.total_tokens` counts them). Four scenarios, each on a fresh database and
storage root, so the result cache is empty and every record is really called:

- **requests**: one `llm` step, 1,200 requests/min binds, 100-600 ms latency; next to Ray's own
  `ray.data.llm` `HttpRequestProcessor` sending the same request bodies (same model, messages
  and JSON-schema response format, built by the augmenter's own `build_request`).
- **tokens**: two `llm` steps on one account; tokens/min binds (set to what 15 calls a second
  of the first step use, where the request limit allows 20; the second step's calls are
  larger). The steps estimate each call at its prompt plus `max_tokens` (512), many times
  what the replies use: the limiter has to learn that from the replies' usage.
- **flaky**: one `llm` step, 1,200 requests/min binds, 0.8-1.2 s latency and 5 % of all
  attempts answered 500 (after the latency, as a struggling provider does).
- **shared**: two runs at once and the online API (a Ray Serve application, three clients
  posting 10 records at a time from the moment the runs call) on one provider account;
  1,200 requests/min binds their sum.

Achieved rate comes from the server's own counters: what it admitted (every answer but a 429:
a 500 used the quota too) / (last request - first request) * 60, so Ray start-up and Parquet
writing are not provider time. Targets, each scenario: >= 0.97 of the binding limit, < 0.5 %
of requests answered 429, 0 records failed or lost.

    PYTHONPATH=. .venv/bin/python bench/provider_saturation.py                  # all four
    PYTHONPATH=. .venv/bin/python bench/provider_saturation.py --scenario flaky
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import pandas as pd  # noqa: E402
import ray  # noqa: E402
import yaml  # noqa: E402

from actors.runs import start_run  # noqa: E402
from augment_core.settings import Settings  # noqa: E402
from augment_core.store import open_store  # noqa: E402
from devtools.fake_openai import FakeOpenAI  # noqa: E402
from pipelines.augmenters.registry import build_step  # noqa: E402
from pipelines.workflows.loader import load_spec  # noqa: E402

RPM = 1200
CHAT = "/v1/chat/completions"
STEP = "describe"
OUTPUTS = {"summary": {"description": "one line"}, "size": {"type": "integer", "description": "head count"}}
# Both outputs carry a description so that Arrow, which stores the payload column as a struct,
# cannot add "description": null to one of them: the ray.data.llm side must send identical bodies.
SECOND_STEP = {"use": "llm", "name": "classify", "params": {
    "provider": "fake", "system": "You sort organisations into industries.",
    "user": "Which industry is {{name}} in? It is described as: {{summary}}",
    "outputs": {"industry": {"enum": ["software", "retail", "finance", "health", "other"]},
                "confidence": {"type": "number", "description": "0 to 1"}}}}

TARGET_FRACTION = 0.97
TARGET_429_PCT = 0.5
SERVE_PORT = 8791


@dataclass
class Side:
    """One thing that called the provider (a run, ray.data.llm, the online API) and what it got."""

    name: str
    records: int
    ok: int = 0
    errors: int = 0  # records that ended with an error (augment: a step's status 'error')
    wall_s: float = 0.0
    note: str = ""

    @property
    def lost(self) -> int:
        return self.records - self.ok


@dataclass
class Scenario:
    name: str
    binding: str  # "requests" or "tokens"
    limit: float  # the binding limit, per minute
    sides: list[Side] = field(default_factory=list)
    server: dict[str, Any] = field(default_factory=dict)  # the provider's counters, all sides together
    notes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return int(self.server.get("by_status", {}).get(status, 0))

    @property
    def requests(self) -> int:
        return int(self.server.get("requests", 0))

    @property
    def span_s(self) -> float:
        first, last = self.server.get("first_at"), self.server.get("last_at")
        return (last - first) if first and last else 0.0

    @property
    def requests_per_minute(self) -> float:
        """Admitted requests (all but 429s) per minute."""
        return (self.requests - self.count("429")) / self.span_s * 60 if self.span_s > 0 else 0.0

    @property
    def per_minute(self) -> float:
        """Admitted units of the binding limit per minute."""
        if self.binding == "requests":
            return self.requests_per_minute
        used = sum(self.server.get("tokens_per_second", {}).values())
        return used / self.span_s * 60 if self.span_s > 0 else 0.0

    @property
    def fraction(self) -> float:
        return self.per_minute / self.limit

    @property
    def pct_429(self) -> float:
        return 100.0 * self.count("429") / self.requests if self.requests else 0.0

    def checks(self) -> list[tuple[str, bool, str]]:
        failed = sum(side.errors for side in self.sides if side.name != "ray.data.llm")
        lost = sum(side.lost for side in self.sides if side.name != "ray.data.llm")
        return [(f"achieved >= {TARGET_FRACTION:g} of the {self.binding} limit", self.fraction >= TARGET_FRACTION,
                 f"{self.fraction:.3f}"),
                (f"429s < {TARGET_429_PCT:g} % of requests", self.pct_429 < TARGET_429_PCT, f"{self.pct_429:.2f} %"),
                ("0 records failed or lost", failed == 0 and lost == 0, f"{failed} failed, {lost} lost")]


# -- inputs ------------------------------------------------------------------------------------------

def write_records(path: Path, n: int, prefix: str = "Organisation") -> list[dict[str, str]]:
    rows = [{"id": str(i), "name": f"{prefix} {i:05d}"} for i in range(n)]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "name"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def spec_dict(name: str, data: Path | None, base_url: str, limits: dict[str, Any], two_steps: bool,
              account: str) -> dict[str, Any]:
    """A workflow of one or two `llm` steps; `account` names the limiter (a fresh one per scenario)."""
    steps: list[dict[str, Any]] = [{"use": "llm", "name": STEP, "params": {
        "provider": "fake", "user": "Describe {{name}}", "outputs": OUTPUTS}}]
    if two_steps:
        steps.append(SECOND_STEP)
    return {
        "name": name,
        "source": {"kind": "csv", "path": str(data or "unused.csv")},
        "providers": {"fake": {
            "kind": "openai", "base_url": base_url, "allow_hosts": ["127.0.0.1"], "model": "m1", "account": account,
            "limits": {"max_in_flight": 64, **limits},
            "prices": {"input_per_million": 1, "output_per_million": 2},
        }},
        "schema": {"fields": {"id": {"required": True}, "name": {}}, "key": "id"},
        "steps": steps,
        "sink": {"dataset": name},
    }


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def fresh_settings(folder: Path) -> Settings:
    """A database and storage root of its own: the result cache (a table there) starts empty."""
    folder.mkdir(parents=True, exist_ok=True)
    return Settings(storage_root=str(folder / "data"), database_url=f"sqlite:///{folder / 'augment.db'}",
                    cache_backend="database")


# -- a real run ----------------------------------------------------------------------------------------

def launch(settings: Settings, spec_path: Path) -> Callable[[], Side]:
    """Start a run; the returned function waits for it and reads what it wrote."""
    spec = load_spec(spec_path)
    started = time.perf_counter()
    run_id, (_, final) = start_run(settings, spec, str(spec_path))
    steps = spec.step_names()

    def finish() -> Side:
        ray.get(final)
        run = open_store(settings).get_run(run_id)
        side = Side(f"run {spec.name}", int(run.counts.get("in", 0)), wall_s=time.perf_counter() - started)
        if run.status != "succeeded":
            side.note = f"run {run.status}: {run.error}"
            return side
        table = pd.read_parquet(run.output["path"])
        ok = pd.Series(True, index=table.index)
        for step in steps:
            ok &= table[f"{step}_status"] == "ok"
        side.ok, side.errors = int(ok.sum()), int((~ok).sum())
        side.note = f"run counts {dict(run.counts)}"
        if side.errors:
            first = table[~ok].iloc[0]
            side.note += "; first error: " + "; ".join(
                str(first.get(f"{s}_error")) for s in steps if first[f"{s}_status"] != "ok")
        return side

    return finish


def run_once(settings: Settings, spec_path: Path) -> Side:
    return launch(settings, spec_path)()


# -- side B: ray.data.llm --------------------------------------------------------------------------------

def run_ray_data_llm(spec_path: Path, rows: list[dict[str, str]], fake: FakeOpenAI, actors: int, retries: int,
                     batch_size: int, num_cpus: float, qps: int | None) -> tuple[Side, dict[str, dict], str]:
    from ray.data.llm import (
        HttpRequestProcessorConfig,
        HttpRequestStageConfig,
        build_processor,
    )

    step = step_of(spec_path, 0)
    payloads = [{"id": r["id"], "payload": step.build_request(r).json} for r in rows]  # the augmenter's bodies

    config = HttpRequestProcessorConfig(
        url=fake.base_url + "/chat/completions",
        qps=qps,
        concurrency=(actors, actors),  # a plain int n gives an autoscaling pool of 1..n for this stage
        batch_size=batch_size,
        max_retries=retries,
        http_request_stage=HttpRequestStageConfig(num_cpus=num_cpus),
    )
    settings_line = (f"qps={qps or 'None (no pacing)'} per actor, concurrency=({actors}, {actors}), "
                     f"batch_size={batch_size}, max_retries={retries}, base_retry_wait_time_in_s=1 (default), "
                     f"num_cpus={num_cpus} for the HTTP stage and for preprocess/postprocess")

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        try:
            content = row["http_response"]["choices"][0]["message"]["content"]
            data = json.loads(content)
            ok = isinstance(data.get("summary"), str) and type(data.get("size")) is int
        except Exception:  # noqa: BLE001 - anything unexpected is a row without a valid reply
            ok, content = False, None
        return {"id": row["id"], "ok": ok, "content": content if ok else None}

    processor = build_processor(
        config,
        preprocess=lambda row: {"id": row["id"], "payload": row["payload"]},
        postprocess=postprocess,
        preprocess_map_kwargs={"num_cpus": num_cpus},
        postprocess_map_kwargs={"num_cpus": num_cpus},
    )
    started = time.perf_counter()
    values: dict[str, dict] = {}
    side = Side("ray.data.llm", len(rows))
    try:
        out = processor(ray.data.from_items(payloads)).take_all()
    except Exception as exc:  # noqa: BLE001 - the whole job failed: every record is lost
        side.wall_s = time.perf_counter() - started
        cause = str(exc).strip().splitlines()
        reason = next((line for line in cause if "Reached maximum retries" in line), cause[-1] if cause else "")
        side.note = f"JOB FAILED ({type(exc).__name__}): all {len(rows)} records counted as lost; {reason[:200]}"
        traceback.print_exc(limit=1, file=sys.stderr)
        return side, values, settings_line
    side.wall_s = time.perf_counter() - started
    seen = set()
    for r in out:
        if r["ok"] and r["id"] not in seen:
            seen.add(r["id"])
            values[str(r["id"])] = json.loads(r["content"])
    side.ok = len(values)
    side.errors = sum(1 for r in out if not r["ok"])
    missing = len(rows) - len({r["id"] for r in out})
    side.note = f"{len(out)} rows back, {side.errors} without a valid reply, {missing} missing"
    return side, values, settings_line


# -- scenarios ----------------------------------------------------------------------------------------

def step_of(spec_path: Path, index: int) -> Any:
    spec = load_spec(spec_path)
    step = build_step(spec.steps[index], spec.step_names()[index])
    step.provider = spec.providers["fake"]
    return step


def scenario_requests(folder: Path, fake: FakeOpenAI, args: argparse.Namespace) -> Scenario:
    fake.configure(rpm=RPM, tpm=None, latency_ms=(100, 600), error_rate=0.0)
    rows = write_records(folder / "records.csv", args.records)
    spec_path = write_spec(folder / "spec.yaml", spec_dict(
        "saturation_requests", folder / "records.csv", fake.base_url, {"requests_per_minute": RPM}, False,
        "saturation_requests"))
    fake.reset()
    scenario = Scenario("requests", "requests", RPM, [run_once(fresh_settings(folder / "run"), spec_path)],
                        fake.stats())
    if args.ray_data_llm:
        qps = max(1, int(RPM / 60 / args.ray_actors))
        fake.reset()
        ray_side, _, settings_line = run_ray_data_llm(
            spec_path, rows, fake, args.ray_actors, 3, 64, 0.25, qps)
        ray_data_llm = Scenario("ray.data.llm", "requests", RPM, [ray_side], fake.stats())
        scenario.sides.append(ray_side)
        scenario.notes.append(
            f"ray.data.llm on the same records ({settings_line}): {ray_data_llm.per_minute:,.0f} requests/min = "
            f"{ray_data_llm.fraction:.3f} of the limit, {ray_data_llm.server.get('by_status')}, "
            f"{ray_side.wall_s:.0f} s; {ray_side.note}")
    return scenario


def scenario_tokens(folder: Path, fake: FakeOpenAI, args: argparse.Namespace) -> Scenario:
    fake.configure(rpm=RPM, tpm=None, latency_ms=(100, 600), error_rate=0.0)
    rows = write_records(folder / "records.csv", args.records)
    spec = spec_dict("saturation_tokens", folder / "records.csv", fake.base_url, {}, True, "saturation_tokens")
    probe = write_spec(folder / "probe.yaml", spec)
    first, second = step_of(probe, 0), step_of(probe, 1)
    # The second step's prompt holds the first one's summary; the fake's summaries are as long as any.
    counted = [[fake.counted_tokens(CHAT, first.build_request(r).json) for r in rows],
               [fake.counted_tokens(CHAT, second.build_request(r | {"summary": "value-000000"}).json) for r in rows]]
    per_call = [sum(c) / len(c) for c in counted]
    estimated = sum(sum(first.estimate(first.build_request(r))) for r in rows[:50]) / 50
    # Tokens bind for both steps: 15 calls a second of the smaller kind, where requests allow 20.
    tpm = round(min(per_call) * 15 * 60)
    fake.configure(tpm=tpm)
    spec["providers"]["fake"]["limits"] |= {"requests_per_minute": RPM, "tokens_per_minute": tpm}
    spec_path = write_spec(folder / "spec.yaml", spec)
    fake.reset()
    side = run_once(fresh_settings(folder / "run"), spec_path)
    scenario = Scenario("tokens", "tokens", tpm, [side], fake.stats())
    scenario.notes.append(
        f"tokens/min {tpm:,} (a call counts {per_call[0]:.0f} tokens in step 1, {per_call[1]:.0f} in step 2; "
        f"the steps estimate {estimated:.0f}); requests reached {scenario.requests_per_minute:,.0f}/min "
        f"of the {RPM:,} allowed")
    return scenario


def scenario_flaky(folder: Path, fake: FakeOpenAI, args: argparse.Namespace) -> Scenario:
    fake.configure(rpm=RPM, tpm=None, latency_ms=(800, 1200), error_rate=0.05)
    write_records(folder / "records.csv", args.records)
    spec_path = write_spec(folder / "spec.yaml", spec_dict(
        "saturation_flaky", folder / "records.csv", fake.base_url, {"requests_per_minute": RPM}, False,
        "saturation_flaky"))
    fake.reset()
    side = run_once(fresh_settings(folder / "run"), spec_path)
    scenario = Scenario("flaky", "requests", RPM, [side], fake.stats())
    scenario.notes.append(f"{scenario.count('500')} attempts answered 500 and retried")
    return scenario


def scenario_shared(folder: Path, fake: FakeOpenAI, args: argparse.Namespace) -> Scenario:
    from ray import serve

    from serve_apps.api import build_app

    fake.configure(rpm=RPM, tpm=None, latency_ms=(100, 600), error_rate=0.0)
    limits = {"requests_per_minute": RPM}
    specs = []
    for run in ("a", "b"):
        data = folder / f"records_{run}.csv"
        write_records(data, args.records // 2, prefix=f"Run {run} organisation")
        spec = spec_dict(f"saturation_shared_{run}", data, fake.base_url, limits, False, "saturation_shared")
        specs.append(write_spec(folder / f"spec_{run}.yaml", spec))
    workflows = folder / "workflows"
    workflows.mkdir()
    online = spec_dict("saturation_online", None, fake.base_url, limits, False, "saturation_shared")
    write_spec(workflows / "online.yaml", online)
    serve.start(http_options={"host": "127.0.0.1", "port": SERVE_PORT})
    serve.run(build_app({"workflows_dir": str(workflows)}), name="api", route_prefix="/api")
    url = f"http://127.0.0.1:{SERVE_PORT}/api/v1/workflows/saturation_online/augment"
    api = Side("online API", 0)
    stop = threading.Event()
    ids = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []

    def client() -> None:
        with httpx.Client(timeout=600) as http:
            while not stop.is_set():
                with lock:
                    batch = [{"id": f"api-{n}", "name": f"Online organisation {n:05d}"}
                             for n in itertools.islice(ids, 10)]
                    api.records += len(batch)
                sent = time.perf_counter()
                reply = http.post(url, json={"records": batch})
                good = [r for r in reply.json()["records"] if r.get(f"{STEP}_status") == "ok"] \
                    if reply.status_code == 200 else []
                with lock:
                    latencies.append(time.perf_counter() - sent)
                    api.ok += len(good)
                    api.errors += len(batch) - len(good)
                    if reply.status_code != 200 and not api.note:
                        api.note = f"HTTP {reply.status_code}: {reply.text[:200]}"

    try:
        fake.reset()
        started = time.perf_counter()
        with ThreadPoolExecutor(3) as pool:
            runs = [launch(fresh_settings(folder / spec.stem), spec) for spec in specs]
            # The API joins once the runs call: the span measured is all three sharing the account.
            while not fake.stats()["requests"]:
                time.sleep(0.05)
            clients = [pool.submit(client) for _ in range(3)]
            sides = [finish() for finish in runs]
            stop.set()
            for future in clients:
                future.result()
        api.wall_s = time.perf_counter() - started
        ordered = sorted(latencies) or [0.0]
        api.note = api.note or (f"{api.records} records in {len(latencies)} requests of 10, 3 clients; latency "
                                f"p50 {ordered[len(ordered) // 2]:.2f} s, max {ordered[-1]:.2f} s")
    finally:
        stop.set()
        serve.shutdown()
    return Scenario("shared", "requests", RPM, [*sides, api], fake.stats())


SCENARIOS = {"requests": scenario_requests, "tokens": scenario_tokens, "flaky": scenario_flaky,
             "shared": scenario_shared}


# -- report ------------------------------------------------------------------------------------------

def profile(counts: dict[str, int]) -> str:
    """One figure per 1-second window, first to last."""
    if not counts:
        return "nothing admitted"
    seconds = sorted(int(s) for s in counts)
    return " ".join(str(counts.get(str(s), 0)) for s in range(seconds[0], seconds[-1] + 1))


def report(scenario: Scenario) -> None:
    s = scenario.server
    unit = "tokens" if scenario.binding == "tokens" else "requests"
    print(f"\n== {scenario.name}: {scenario.limit:,.0f} {unit}/min bind "
          f"({scenario.limit / 60:,.1f} a second in 1-second windows)")
    print("| side | records | ok | failed | lost | wall s |")
    print("|---|---:|---:|---:|---:|---:|")
    for side in scenario.sides:
        print(f"| {side.name} | {side.records:,} | {side.ok:,} | {side.errors:,} | {side.lost:,} | {side.wall_s:.1f} |")
    for side in scenario.sides:
        if side.note:
            print(f"  {side.name}: {side.note}")
    print(f"  server: {s.get('requests', 0):,} requests, by status {s.get('by_status')}, max in flight "
          f"{s.get('max_in_flight')}, first to last request {scenario.span_s:.1f} s")
    print(f"  achieved {scenario.per_minute:,.0f} {unit}/min = {scenario.fraction:.3f} of the limit; "
          f"429s {scenario.pct_429:.2f} %")
    windows = s.get("tokens_per_second" if scenario.binding == "tokens" else "admitted_per_second", {})
    print(f"  {unit} admitted per second: {profile(windows)}")
    for note in scenario.notes:
        print(f"  {note}")
    for label, met, value in scenario.checks():
        print(f"  {'MET   ' if met else 'MISSED'} {label}: {value}")


def summary(scenarios: list[Scenario]) -> str:
    lines = ["| scenario | binding limit /min | achieved /min | fraction | requests | 429s | 429 % | 500s | "
             "records | failed | lost |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for sc in scenarios:
        ours = [side for side in sc.sides if side.name != "ray.data.llm"]
        lines.append(
            f"| {sc.name} | {sc.limit:,.0f} {sc.binding} | {sc.per_minute:,.0f} | {sc.fraction:.3f} | "
            f"{sc.requests:,} | {sc.count('429'):,} | {sc.pct_429:.2f} | {sc.count('500'):,} | "
            f"{sum(x.records for x in ours):,} | {sum(x.errors for x in ours):,} | {sum(x.lost for x in ours):,} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--records", type=int, default=1000, help="records per scenario")
    parser.add_argument("--ray-actors", type=int, default=4, help="ray.data.llm actors (requests scenario)")
    parser.add_argument("--no-ray-data-llm", dest="ray_data_llm", action="store_false",
                        help="skip the ray.data.llm side of the requests scenario")
    args = parser.parse_args()

    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    bench_started = time.perf_counter()
    scenarios: list[Scenario] = []
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI() as fake:
        ray.init(address="local", logging_level="ERROR", log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # its progress lines would bury the tables
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        try:
            for name in names:
                started = time.perf_counter()
                (Path(tmp) / name).mkdir()
                scenario = SCENARIOS[name](Path(tmp) / name, fake, args)
                report(scenario)
                print(f"  ({time.perf_counter() - started:.0f} s)")
                scenarios.append(scenario)
        except Exception:
            traceback.print_exc()
            return 2
        finally:
            ray.shutdown()
    print(f"\n{args.records:,} records per scenario; achieved = admitted (all but 429s) / "
          "(last - first request) * 60, from the server's counters\n")
    print(summary(scenarios))
    print(f"\nbench took {time.perf_counter() - bench_started:.0f} s")
    return 0 if all(met for sc in scenarios for _, met, _ in sc.checks()) else 1


if __name__ == "__main__":
    sys.exit(main())
