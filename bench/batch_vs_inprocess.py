"""Throughput of the sample workflow: one Python process vs a run on Ray Data.

Both sides run the same validation and augmenter code over the same synthetic organisation
records (bench/synth.py): the in-process side through `InProcessEngine` in chunks, the Ray side
as a real run (read CSV, validate, quarantine, augment, write Parquet, catalog). Prints rows/s
and the ratio Ray / in-process for each size.

    .venv/bin/python bench/batch_vs_inprocess.py --rows 20000 100000
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import ray  # noqa: E402
import yaml  # noqa: E402
from synth import organisations, write  # noqa: E402

from actors.runs import start_run  # noqa: E402
from augment_core.settings import Settings  # noqa: E402
from augment_core.store import open_store  # noqa: E402
from pipelines.engine.inprocess import InProcessEngine  # noqa: E402
from pipelines.workflows.loader import load_spec  # noqa: E402

CHUNK = 10_000


def spec_for(data: Path, folder: Path) -> Path:
    spec = yaml.safe_load((ROOT / "configs/workflows/organisations.yaml").read_text())
    spec["source"]["path"] = str(data)
    # The sample's ORG-\d{5} holds 100,000 ids; synth.py numbers ORG-100000 and up past that, which
    # would leave most of a larger benchmark in quarantine. Same share of valid records at every size.
    spec["schema"]["fields"]["org_id"]["regex"] = "ORG-\\d{5,}"
    for step in spec["steps"]:
        if "reference" in step["params"]:
            step["params"]["reference"] = str(ROOT / "configs/data/country_regions.csv")
    spec["sink"]["export_csv"] = False
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def in_process(spec_path: Path, data: Path) -> tuple[float, int]:
    start = time.perf_counter()
    workflow = InProcessEngine(load_spec(spec_path))
    valid = 0
    with data.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for i in range(0, len(rows), CHUNK):
        valid += len(workflow.augment(rows[i : i + CHUNK]).records)
    return time.perf_counter() - start, valid


def on_ray(spec_path: Path, settings: Settings) -> tuple[float, int, str]:
    start = time.perf_counter()
    run_id, (_, final) = start_run(settings, load_spec(spec_path), str(spec_path))
    ray.get(final)
    elapsed = time.perf_counter() - start
    run = open_store(settings).get_run(run_id)
    assert run.status == "succeeded", run.error
    steps = ", ".join(f"{s.name} {s.seconds:.1f}" for s in run.steps if s.seconds)
    return elapsed, run.counts["valid"], f"work seconds by step (all workers): {steps}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 100_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        settings = Settings(storage_root=str(folder / "data"), database_url=f"sqlite:///{folder / 'bench.db'}")
        ray.init(address="local", logging_level="ERROR", log_to_driver=False)
        print(f"{'rows':>9} {'in-process rows/s':>18} {'Ray Data rows/s':>16} {'Ray / in-process':>17}")
        for n in args.rows:
            data = folder / f"orgs-{n}.csv"
            write(organisations(n, seed=11), data, "csv")
            spec_path = spec_for(data, folder)
            local_s, local_valid = in_process(spec_path, data)
            ray_s, ray_valid, steps = on_ray(spec_path, settings)
            # Chunked in-process dedupe only sees duplicates within a chunk; counts may differ by those.
            print(f"{n:>9} {n / local_s:>18,.0f} {n / ray_s:>16,.0f} {local_s / ray_s:>16.2f}x"
                  f"   (valid: {local_valid} in-process, {ray_valid} Ray)")
            print(f"{'':>9} {steps}")
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
