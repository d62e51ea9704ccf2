"""Latency of one-record online augments: `InProcessEngine.augment([record])` on the sample workflow.

What one unloaded `POST /api/v1/workflows/organisations/augment` of one record costs inside an API
replica, without HTTP: the engine is built once, warmed up, then timed over `--calls` one-record
calls cycling through varied synthetic records (bench/synth.py; about 1 in 8 is invalid). Prints
p50/p90/p99 in ms and calls/s.

`--baseline DIR` times another checkout of the project too, in a subprocess, round by round in turn
with this one so that both see the same load, and checks that both answer every record identically.

    .venv/bin/python bench/inprocess_latency.py --calls 2000
    mkdir /tmp/base && git archive HEAD~1 | tar -x -C /tmp/base
    .venv/bin/python bench/inprocess_latency.py --calls 2000 --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
# `--root DIR` (used for the baseline's subprocess) imports the project from another checkout.
ROOT = Path(sys.argv[sys.argv.index("--root") + 1]).resolve() if "--root" in sys.argv else BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from synth import organisations  # noqa: E402

from pipelines.engine.inprocess import InProcessEngine  # noqa: E402
from pipelines.workflows.loader import load_spec  # noqa: E402

SPEC = BENCH.parent / "configs/workflows/organisations.yaml"  # its reference path resolves next to it
WARMUP = 200


def records(n: int) -> list[dict[str, str]]:
    # The sample's ORG-\d{5} accepts ORG-00001 .. ORG-99999; synth numbers from 1, so all fit below 100 k.
    return organisations(n, seed=11)


def time_calls(engine: InProcessEngine, rows: list[dict[str, str]], start: int, calls: int) -> list[float]:
    """Seconds of each of `calls` one-record augments, cycling through rows from `start`."""
    out = []
    for i in range(start, start + calls):
        record = rows[i % len(rows)]
        began = time.perf_counter()
        engine.augment([record])
        out.append(time.perf_counter() - began)
    return out


def answers(engine: InProcessEngine, rows: list[dict[str, str]]) -> list[Any]:
    """Each record's answer, for comparing two checkouts."""
    results = [engine.augment([row]) for row in rows]
    return [{"records": r.records, "invalid": r.invalid} for r in results]


def summary(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return (f"{label:<10} {len(ms):>6} calls  p50 {q[49]:7.3f} ms  p90 {q[89]:7.3f} ms  p99 {q[98]:7.3f} ms"
            f"  mean {statistics.fmean(ms):7.3f} ms  {1000 * len(ms) / sum(ms):8,.0f} calls/s")


def serve(rows: list[dict[str, str]]) -> None:
    """The baseline's side: answer commands on stdin (one JSON line each) with JSON lines."""
    engine = InProcessEngine(load_spec(SPEC))
    time_calls(engine, rows, 0, WARMUP)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["do"] == "time":
            print(json.dumps(time_calls(engine, rows, command["start"], command["calls"])), flush=True)
        elif command["do"] == "answers":
            print(json.dumps(answers(engine, rows), default=str), flush=True)
        else:
            return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--records", type=int, default=1000, help="distinct records cycled through")
    parser.add_argument("--rounds", type=int, default=10, help="with --baseline: turns each side takes")
    parser.add_argument("--baseline", type=Path, help="another checkout of the project to time alongside")
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rows = records(args.records)
    if args.serve:
        serve(rows)
        return 0

    started = time.perf_counter()
    engine = InProcessEngine(load_spec(SPEC))
    print(f"engine built in {1000 * (time.perf_counter() - started):.0f} ms; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    time_calls(engine, rows, 0, WARMUP)

    baseline = None
    if args.baseline:
        baseline = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--root", str(args.baseline), "--records", str(args.records)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=args.baseline,
        )
        assert baseline.stdin and baseline.stdout
        json.loads(baseline.stdout.readline())

    rounds = args.rounds if baseline else 1
    per_round = max(1, args.calls // rounds)
    ours: list[float] = []
    theirs: list[float] = []
    for r in range(rounds):
        start = WARMUP + r * per_round
        ours += time_calls(engine, rows, start, per_round)
        if baseline:
            assert baseline.stdin and baseline.stdout
            baseline.stdin.write(json.dumps({"do": "time", "start": start, "calls": per_round}) + "\n")
            baseline.stdin.flush()
            theirs += json.loads(baseline.stdout.readline())

    if baseline:
        assert baseline.stdin and baseline.stdout
        print(summary("baseline", theirs))
    print(summary("this tree", ours))
    if baseline:
        assert baseline.stdin and baseline.stdout
        print(f"speed-up   p50 {statistics.median(theirs) / statistics.median(ours):.1f}x")
        baseline.stdin.write(json.dumps({"do": "answers"}) + "\n")
        baseline.stdin.flush()
        expected = json.loads(baseline.stdout.readline())
        baseline.stdin.write(json.dumps({"do": "stop"}) + "\n")
        baseline.stdin.flush()
        baseline.wait()
        got = json.loads(json.dumps(answers(engine, rows), default=str))
        same = sum(a == b for a, b in zip(got, expected))
        print(f"answers    {same}/{len(rows)} records answered identically by both trees")
        return 0 if same == len(rows) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
