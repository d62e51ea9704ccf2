"""How close an `llm` augmenter gets to a provider's rate limit, next to Ray's own `ray.data.llm`.

One local OpenAI-compatible server (devtools/fake_openai.py) enforces the limit in 1-second
windows (rpm/60 per second) and answers after 100-600 ms. Both sides send the same
chat-completions requests (same model, messages and JSON-schema response format, built by the
`llm` augmenter's own `build_request`) for the same records, one after the other, with the
server's counters reset in between:

- **augment**: a real run (read CSV, validate, `llm` step on Ray Data, write Parquet) with the
  provider declared at the server's limit; the run's shared limiter paces the calls.
- **ray.data.llm**: `HttpRequestProcessorConfig` + `build_processor` from Ray itself, with
  `qps = rpm / 60 / actors` per actor so that the actors together aim at the limit.

Achieved rate comes from the server's own timestamps: HTTP 200s / (last request - first
request) * 60, so Ray start-up and Parquet writing are not counted as provider time.

    PYTHONPATH=. .venv/bin/python bench/provider_saturation.py --records 1000 --rpm 1200 --ray-actors 4
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import ray  # noqa: E402
import yaml  # noqa: E402

from actors.runs import start_run  # noqa: E402
from augment_core.settings import Settings  # noqa: E402
from augment_core.store import open_store  # noqa: E402
from devtools.fake_openai import FakeOpenAI  # noqa: E402
from pipelines.augmenters.registry import build_step  # noqa: E402
from pipelines.workflows.loader import load_spec  # noqa: E402

LATENCY_MS = (100, 600)
STEP = "describe"
OUTPUTS = {"summary": {"description": "one line"}, "size": {"type": "integer", "description": "head count"}}
# Both outputs carry a description so that Arrow, which stores the payload column as a struct,
# cannot add "description": null to one of them: the ray.data.llm side must send identical bodies.

TARGET_FRACTION = 0.95
TARGET_429_PCT = 1.0


@dataclass
class Side:
    name: str
    records: int
    ok: int = 0
    errors: int = 0  # records that ended with an error reply (augment: status 'error')
    wall_s: float = 0.0
    server: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def lost(self) -> int:
        return self.records - self.ok

    @property
    def admitted(self) -> int:
        return int(self.server.get("by_status", {}).get("200", 0))

    @property
    def rejected(self) -> int:
        return int(self.server.get("by_status", {}).get("429", 0))

    @property
    def requests(self) -> int:
        return int(self.server.get("requests", 0))

    @property
    def span_s(self) -> float:
        first, last = self.server.get("first_at"), self.server.get("last_at")
        return (last - first) if first and last else 0.0

    @property
    def per_minute(self) -> float:
        return self.admitted / self.span_s * 60 if self.span_s > 0 else 0.0

    @property
    def pct_429(self) -> float:
        return 100.0 * self.rejected / self.requests if self.requests else 0.0


# -- the shared inputs -----------------------------------------------------------------------------------

def write_records(path: Path, n: int) -> list[dict[str, str]]:
    rows = [{"id": str(i), "name": f"Organisation {i:05d}"} for i in range(n)]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "name"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def write_spec(path: Path, data: Path, base_url: str, rpm: int) -> Path:
    spec = {
        "name": "provider_saturation",
        "source": {"kind": "csv", "path": str(data)},
        "providers": {"fake": {
            "kind": "openai", "base_url": base_url, "model": "m1",
            "limits": {"requests_per_minute": rpm, "max_in_flight": 64},
            "prices": {"input_per_million": 1, "output_per_million": 2},
        }},
        "schema": {"fields": {"id": {"required": True}, "name": {}}, "key": "id"},
        "steps": [{"use": "llm", "name": STEP, "params": {
            "provider": "fake", "user": "Describe {{name}}", "outputs": OUTPUTS}}],
        "sink": {"dataset": "provider_saturation"},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# -- side A: a real run ----------------------------------------------------------------------------------

def run_augment(spec_path: Path, folder: Path, fake: FakeOpenAI, n: int) -> tuple[Side, dict[str, dict]]:
    # A fresh database and storage root: the result cache (a table in that database) starts empty,
    # so every record is really called.
    settings = Settings(storage_root=str(folder / "data"), database_url=f"sqlite:///{folder / 'augment.db'}",
                        cache_backend="database")
    fake.reset()
    started = time.perf_counter()
    run_id, (_, final) = start_run(settings, load_spec(spec_path), str(spec_path))
    ray.get(final)
    side = Side("augment", n, wall_s=time.perf_counter() - started, server=fake.stats())
    run = open_store(settings).get_run(run_id)
    values: dict[str, dict] = {}
    if run.status != "succeeded":
        side.note = f"run {run.status}: {run.error}"
        return side, values
    table = pd.read_parquet(run.output["path"])
    status = table[f"{STEP}_status"]
    side.ok, side.errors = int((status == "ok").sum()), int((status == "error").sum())
    cache_hits = sum(bool(json.loads(p).get("cache_hit")) for p in table[f"{STEP}_provenance"])
    side.note = f"run counts {dict(run.counts)}; cache hits {cache_hits}"
    for row in table[table[f"{STEP}_status"] == "ok"].itertuples(index=False):
        values[str(row.id)] = {"summary": row.summary, "size": int(row.size)}
    return side, values


# -- side B: ray.data.llm --------------------------------------------------------------------------------

def run_ray_data_llm(spec_path: Path, rows: list[dict[str, str]], fake: FakeOpenAI, actors: int, retries: int,
                     batch_size: int, num_cpus: float, qps: int | None) -> tuple[Side, dict[str, dict], str]:
    from ray.data.llm import (
        HttpRequestProcessorConfig,
        HttpRequestStageConfig,
        build_processor,
    )

    spec = load_spec(spec_path)
    step = build_step(spec.steps[0], spec.step_names()[0])
    step.provider = spec.providers["fake"]
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
    fake.reset()
    started = time.perf_counter()
    values: dict[str, dict] = {}
    side = Side("ray.data.llm", len(rows))
    try:
        out = processor(ray.data.from_items(payloads)).take_all()
    except Exception as exc:  # noqa: BLE001 - the whole job failed: every record is lost
        side.wall_s, side.server = time.perf_counter() - started, fake.stats()
        cause = str(exc).strip().splitlines()
        reason = next((line for line in cause if "Reached maximum retries" in line), cause[-1] if cause else "")
        side.name += " (job failed)"  # its rate covers only the requests before the failure
        side.note = f"JOB FAILED ({type(exc).__name__}): all {len(rows)} records counted as lost; {reason[:200]}"
        traceback.print_exc(limit=1, file=sys.stderr)
        return side, values, settings_line
    side.wall_s, side.server = time.perf_counter() - started, fake.stats()
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


# -- report ----------------------------------------------------------------------------------------------

def profile(stats: dict[str, Any], per_second: float) -> str:
    """Admissions per 1-second window, first to last, with how many windows were full."""
    counts = stats.get("admitted_per_second") or {}
    if not counts:
        return "no admissions"
    seconds = sorted(int(s) for s in counts)
    series = [counts.get(str(s), 0) for s in range(seconds[0], seconds[-1] + 1)]
    full = sum(1 for c in series if c >= int(per_second))
    return f"{len(series)} windows, {full} full (>= {int(per_second)}): " + " ".join(map(str, series))


def table(sides: list[Side], rpm: int) -> str:
    head = ("| side | records | achieved req/min | fraction of limit | 429s | 429 % | lost | "
            "ended 'error' | wall s |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in sides:
        lines.append(f"| {s.name} | {s.records:,} | {s.per_minute:,.0f} | {s.per_minute / rpm:.3f} | {s.rejected:,} | "
                     f"{s.pct_429:.2f} | {s.lost:,} | {s.errors:,} | {s.wall_s:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--rpm", type=int, default=1200)
    parser.add_argument("--ray-actors", type=int, default=4)
    parser.add_argument("--ray-retries", type=int, default=3, help="ray.data.llm max_retries (Ray's default is 0)")
    parser.add_argument("--ray-batch-size", type=int, default=64, help="ray.data.llm batch_size (Ray's default)")
    parser.add_argument("--ray-qps", type=int, default=None,
                        help="ray.data.llm qps per actor; default rpm/60/actors (an integer); 0 = None, no pacing")
    parser.add_argument("--ray-num-cpus", type=float, default=0.25,
                        help="CPUs each ray.data.llm worker reserves (Ray's default of 1 collapses on 2 CPUs)")
    args = parser.parse_args()

    qps = max(1, int(args.rpm / 60 / args.ray_actors)) if args.ray_qps is None else (args.ray_qps or None)
    bench_started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(rpm=args.rpm, latency_ms=LATENCY_MS) as fake:
        folder = Path(tmp)
        data = folder / "records.csv"
        rows = write_records(data, args.records)
        spec_path = write_spec(folder / "spec.yaml", data, fake.base_url, args.rpm)
        ray.init(address="local", logging_level="ERROR", log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # its progress lines would bury the table
        try:
            augment, augment_values = run_augment(spec_path, folder, fake, args.records)
            ray_side, ray_values, ray_settings = run_ray_data_llm(
                spec_path, rows, fake, args.ray_actors, args.ray_retries, args.ray_batch_size,
                args.ray_num_cpus, qps)
        finally:
            ray.shutdown()

    per_second = args.rpm / 60
    print(f"\n{args.records:,} records, limit {args.rpm:,} requests/min ({per_second:g}/s in 1-second windows), "
          f"latency {LATENCY_MS[0]}-{LATENCY_MS[1]} ms; achieved = HTTP 200s / (last - first request) * 60 "
          f"from the server's timestamps\n")
    print(table([augment, ray_side], args.rpm))
    print(f"\nray.data.llm settings: {ray_settings}")
    for side in (augment, ray_side):
        s = side.server
        print(f"\n{side.name}: {side.note}")
        print(f"  server: {s.get('requests', 0)} requests, by status {s.get('by_status')}, "
              f"max in flight {s.get('max_in_flight')}, first-to-last request {side.span_s:.1f} s")
        print(f"  admitted per second: {profile(s, per_second)}")
    same = sum(1 for k, v in ray_values.items() if augment_values.get(k) == v)
    print(f"\nsame reply on both sides for {same} of {min(len(augment_values), len(ray_values))} records "
          "(the server's replies are seeded by model + messages, so equal replies mean equal requests)")

    fraction = augment.per_minute / args.rpm
    checks = [(f"achieved >= {TARGET_FRACTION:.0%} of the limit", fraction >= TARGET_FRACTION, f"{fraction:.3f}"),
              (f"429s < {TARGET_429_PCT:g} % of requests", augment.pct_429 < TARGET_429_PCT,
               f"{augment.pct_429:.2f} %"),
              ("0 records lost", augment.lost == 0, f"{augment.lost}")]
    print("\naugment targets:")
    for label, met, value in checks:
        print(f"  {'MET   ' if met else 'MISSED'} {label}: {value}")
    print(f"\nbench took {time.perf_counter() - bench_started:.0f} s")
    return 0 if all(met for _, met, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
