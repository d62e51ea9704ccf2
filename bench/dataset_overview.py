"""A dataset version's overview at 1,000,000 rows: the data dashboard's read
(pipelines/operations/version_profile.py), its time and peak memory, beside pyarrow reading the
same files whole (`pyarrow.dataset(...).to_table()`, which holds the version in memory) as the
baseline, each in a fresh process so that peak RSS is its own.

    .venv/bin/python bench/dataset_overview.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FILES = 8
ROW_GROUP = 131_072  # rows per row group: a reader decodes one at a time, whatever the batch size


def write_version(folder: Path, rows: int) -> None:
    """An augmented-looking version: keys, text, numbers, an enum, a step's status and provenance."""
    rng = np.random.default_rng(7)
    step = rows // FILES
    for part in range(FILES):
        n = step if part < FILES - 1 else rows - step * (FILES - 1)
        start = part * step
        ids = np.arange(start, start + n)
        table = pa.table({
            "record_uuid": [f"{i:032x}" for i in ids],
            "name": [f"Company {i}" for i in ids],
            "employees": rng.integers(1, 50_000, n),
            "revenue": rng.lognormal(12, 2, n),
            "country": rng.choice(["GB", "DE", "FR", "US", "NL", None], n),
            "industry": rng.choice(["software", "retail", "finance", "other"], n),
            "profile_status": rng.choice(["ok", "ok", "ok", "error", "skipped"], n),
            "profile_provenance": [json.dumps({"model": "fake-small", "attempts": 1, "cost_usd": 1.2e-5})] * n,
        })
        pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=ROW_GROUP)


def child(mode: str, folder: str) -> None:
    """Runs in its own process: prints seconds and peak RSS (MiB)."""
    from augment_core.settings import Settings
    from augment_core.storage import StoragePaths
    from pipelines.operations.version_profile import profile_version

    started = time.perf_counter()
    if mode == "overview":
        profile = profile_version(StoragePaths(Settings(storage_root=folder)), folder)
        rows = profile.rows
    else:
        import pyarrow.dataset as pads
        rows = pads.dataset(folder, format="parquet").to_table().num_rows
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": peak}))


def run(mode: str, folder: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(folder)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_version(folder, args.rows)
        size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        print(f"{args.rows:,} rows in {FILES} Parquet files (row groups of {ROW_GROUP:,}), {size:.0f} MiB on disk")
        base, overview = run("read whole", folder), run("overview", folder)
        print(f"{'read':<34} {'seconds':>8} {'peak RSS MiB':>13}")
        print(f"{'pyarrow, the version whole':<34} {base['seconds']:8.2f} {base['peak_mib']:13.0f}")
        print(f"{'overview (version_profile)':<34} {overview['seconds']:8.2f} {overview['peak_mib']:13.0f}")
        print(f"overview / whole read: time {overview['seconds'] / base['seconds']:.1f}x, "
              f"peak memory {overview['peak_mib'] / base['peak_mib']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
