"""CSV reader speed: Arrow where it provably agrees (`pipelines/io/csv_fast.py`) against the row-exact reader.

Synthetic organisation records (bench/synth.py) are written as CSV and read by the CSV source's
reader without Ray (`sources.csv_blocks`, what `RecordFileDatasource._csv` runs: blocks of 10,000
rows, every declared field a string, plus `_source`, `_source_row`, `_source_order` and
`_parse_error`), once row-exactly (`fast=False`) and once with the fast path, in the same process
over the same file; the blocks must be equal. The schema is the sample workflow's
(configs/workflows/organisations.yaml). Prints rows/s of each and the ratio.

    .venv/bin/python bench/reader_speed.py --rows 200000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pyarrow as pa  # noqa: E402
import yaml  # noqa: E402
from synth import organisations, write  # noqa: E402

from pipelines.io.csv_fast import FastCsv  # noqa: E402
from pipelines.io.files import SourceError  # noqa: E402
from pipelines.io.sources import csv_blocks  # noqa: E402
from pipelines.spec.workflow import SchemaSpec, missing_required_columns  # noqa: E402


def read(path: Path, schema: SchemaSpec, fast: bool) -> tuple[float, list[pa.Table]]:
    def require(name: str, present: list[str]) -> None:
        if missing_required_columns(present, schema):
            raise SourceError(f"{name}: required columns missing")

    started = time.perf_counter()
    with pa.OSFile(str(path)) as handle:
        blocks = list(csv_blocks(handle, str(path), list(schema.fields), ",", require, fast=fast))
    return time.perf_counter() - started, blocks


def arrow_rows(path: Path) -> int:
    """How many rows the fast path reads with Arrow before the row-exact reader takes over, if it does."""
    with pa.OSFile(str(path)) as handle:
        reader = FastCsv(handle, ",")
        header = reader.header()
        if header is None:
            return 0
        return sum(t.num_rows for t in reader.tables({name: i for i, name in enumerate(header)}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=1, help="timed reads of each path (the best is shown)")
    args = ap.parse_args(argv)

    spec = yaml.safe_load((ROOT / "configs/workflows/organisations.yaml").read_text())
    schema = SchemaSpec.model_validate(spec["schema"])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "organisations.csv"
        write(organisations(args.rows, args.seed), path, "csv")
        size = path.stat().st_size
        read(path, schema, True)  # warm: imports, the page cache
        slow_s, expected = min((read(path, schema, False) for _ in range(args.repeat)), key=lambda r: r[0])
        fast_s, got = min((read(path, schema, True) for _ in range(args.repeat)), key=lambda r: r[0])
        by_arrow = arrow_rows(path)
    rows = sum(b.num_rows for b in expected)
    same = len(got) == len(expected) and all(g.equals(e) and g.schema == e.schema for g, e in zip(got, expected))
    print(f"{rows} rows ({size / 1e6:.1f} MB) in {len(expected)} blocks; outputs equal: {same}; "
          f"rows read by Arrow: {by_arrow}")
    print(f"row-exact : {slow_s:7.2f} s  {rows / slow_s:10,.0f} rows/s")
    print(f"fast path : {fast_s:7.2f} s  {rows / fast_s:10,.0f} rows/s")
    print(f"speed-up  : {slow_s / fast_s:7.1f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
