"""Augmenter speed: the sample workflow's four costly deterministic steps, before and after their fast paths.

Synthetic organisation records (bench/synth.py) are cut into batches the way a batch run's
`map_batches` sees them, and each step's `apply` (the Arrow path a worker runs) is timed over all
batches. "Before" is the same step with its per-value code as it was: the plain library calls kept
in tests/unit/augmenters/plain_paths.py (the equivalence tests' oracle), around the batch code as
it was; its outputs are attached the same way. Both must give equal tables. The two are timed
interleaved, several times, and the best of each is kept (the machine may be shared). The per-value
caches of the new code are emptied before each timed pass, so a pass starts as a fresh worker does
and only reuses what its own earlier batches taught it.

    .venv/bin/python bench/augmenter_speed.py --rows 50000 --batch 10000 --repeats 5
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pyarrow as pa  # noqa: E402
from synth import organisations  # noqa: E402

from pipelines.augmenters import clean_company_name, normalize_email, normalize_url  # noqa: E402
from pipelines.augmenters.base import Augmenter, string_values  # noqa: E402
from pipelines.augmenters.registry import build_step  # noqa: E402
from pipelines.spec.workflow import StepSpec  # noqa: E402
from tests.unit.augmenters import plain_paths as plain  # noqa: E402

STEPS: dict[str, dict[str, Any]] = {  # as in configs/workflows/organisations.yaml
    "normalize_phone": {"column": "phone", "region_column": "country_code"},
    "normalize_email": {"column": "email"},
    "clean_company_name": {"column": "name"},
    "normalize_url": {"column": "website"},
}
PLAIN_PARSE: dict[str, Callable[[str], Mapping[str, Any]]] = {
    "normalize_email": plain.email, "clean_company_name": plain.company_name, "normalize_url": plain.url,
}


def clear_value_caches() -> None:
    """Forget what the new code learnt about values (domains, hosts, words): a fresh worker."""
    normalize_email._domain.cache_clear()
    normalize_url._host.cache_clear()
    clean_company_name._key.cache_clear()
    clean_company_name._latin_letter.cache_clear()


def before(step: Augmenter, batch: pa.Table) -> pa.Table:
    """The step as it ran before: its old per-value code and batch code on the batch's values."""
    params: Any = step.params
    values = string_values(batch.column(params.column))
    assert values is not None
    outputs: Mapping[str, Sequence[Any]]
    if step.name == "normalize_phone":
        regions = string_values(batch.column(params.region_column)) if params.region_column else None
        outputs = plain.phone_outputs(values, regions, params.default_region)
    else:
        outputs = plain.column_outputs(PLAIN_PARSE[step.name], list(type(step).outputs), values)  # type: ignore[attr-defined]
    return step.attach(batch, {params.output(suffix): column for suffix, column in outputs.items()})


def after(step: Augmenter, batch: pa.Table) -> pa.Table:
    return step.apply(batch)


def timed(run: Callable[[Augmenter, pa.Table], pa.Table], step: Augmenter,
          batches: list[pa.Table]) -> tuple[float, list[pa.Table]]:
    clear_value_caches()
    gc.collect()
    start = time.perf_counter()
    out = [run(step, batch) for batch in batches]
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    rows = organisations(args.rows, args.seed)
    table = pa.table({c: [r[c] for r in rows] for c in ("name", "website", "email", "phone", "country")})
    country = build_step(StepSpec(use="normalize_country", params={"column": "country"}), "country")
    country.setup()
    table = country.apply(table)  # the phone step reads its country_code, as in the sample workflow
    batches = [table.slice(i, args.batch) for i in range(0, table.num_rows, args.batch)]
    steps = {name: build_step(StepSpec(use=name, params=params), name) for name, params in STEPS.items()}
    for step in steps.values():
        step.setup()
        step.apply(batches[0].slice(0, 100))  # metadata, suffix lists, patterns: loaded before timing
        before(step, batches[0].slice(0, 100))

    best: dict[tuple[str, str], float] = {}
    for repeat in range(args.repeats):
        for name, step in steps.items():
            variants = [("before", before), ("after", after)]
            outs: dict[str, list[pa.Table]] = {}
            for label, run in variants if repeat % 2 == 0 else variants[::-1]:
                seconds, outs[label] = timed(run, step, batches)
                best[(name, label)] = min(best.get((name, label), float("inf")), seconds)
            if not all(a.equals(b) for a, b in zip(outs["before"], outs["after"])):
                print(f"{name}: before and after differ", file=sys.stderr)
                return 1

    n = table.num_rows
    print(f"{n} rows in batches of {args.batch}, best of {args.repeats} interleaved passes; outputs equal")
    print(f"{'step':<20} {'before µs/row':>14} {'after µs/row':>13} {'speed-up':>9}")
    for name in steps:
        old, new = best[(name, "before")] / n * 1e6, best[(name, "after")] / n * 1e6
        print(f"{name:<20} {old:>14.2f} {new:>13.2f} {old / new:>8.1f}x")
    total_old = sum(best[(name, "before")] for name in steps) / n * 1e6
    total_new = sum(best[(name, "after")] for name in steps) / n * 1e6
    print(f"{'all four':<20} {total_old:>14.2f} {total_new:>13.2f} {total_old / total_new:>8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
