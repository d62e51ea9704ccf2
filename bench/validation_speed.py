"""Validation speed: the columnar `validate_table` against the per-record loop it replaced.

Synthetic organisation records (bench/synth.py) are written as CSV and read back the way the CSV
source reads them (`RecordFileDatasource._csv`: blocks of 10,000 rows, every field a string, plus
`_source`, `_source_row`, `_source_order` and `_parse_error`); the schema is the sample workflow's
(configs/workflows/organisations.yaml). Each block is validated by both, in the same process, as a
batch run's `map_batches` does; the outputs must be equal. Prints rows/s of each and the ratio.

    .venv/bin/python bench/validation_speed.py --rows 200000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pyarrow as pa  # noqa: E402
import yaml  # noqa: E402
from synth import organisations, write  # noqa: E402

from pipelines.engine.validation import per_record_table, validate_table  # noqa: E402
from pipelines.io.columns import ERRORS_COLUMN  # noqa: E402
from pipelines.io.sources import csv_blocks  # noqa: E402
from pipelines.spec.workflow import SchemaSpec  # noqa: E402


def raw_blocks(path: Path, schema: SchemaSpec) -> list[pa.Table]:
    """The raw blocks the CSV source gives for `path` (its reader, without Ray)."""
    with pa.OSFile(str(path)) as handle:
        return list(csv_blocks(handle, str(path), list(schema.fields), ",", lambda path, present: None))

def timed(validate: Any, blocks: list[pa.Table], schema: SchemaSpec) -> tuple[float, list[pa.Table]]:
    started = time.perf_counter()
    out = [validate(block, schema) for block in blocks]
    return time.perf_counter() - started, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    spec = yaml.safe_load((ROOT / "configs/workflows/organisations.yaml").read_text())
    # As bench/batch_vs_inprocess.py: ids past ORG-99999 are valid too, so every size has the same share.
    spec["schema"]["fields"]["org_id"]["regex"] = "ORG-\\d{5,}"
    schema = SchemaSpec.model_validate(spec["schema"])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "organisations.csv"
        write(organisations(args.rows, args.seed), path, "csv")
        blocks = raw_blocks(path, schema)
    rows = sum(b.num_rows for b in blocks)
    print(f"{rows} rows in {len(blocks)} blocks, columns {blocks[0].column_names}")

    # One block each first: imports, caches and compiled patterns are not what is measured.
    per_record_table(blocks[0], schema)
    validate_table(blocks[0], schema)
    base_s, expected = timed(per_record_table, blocks, schema)
    new_s, got = timed(validate_table, blocks, schema)
    same = all(g.equals(e) for g, e in zip(got, expected))
    valid = sum(b[ERRORS_COLUMN].null_count for b in got)
    print(f"valid {valid}, invalid {rows - valid}; outputs equal: {same}")
    print(f"per-record loop : {base_s:7.2f} s  {rows / base_s:10,.0f} rows/s")
    print(f"columnar        : {new_s:7.2f} s  {rows / new_s:10,.0f} rows/s")
    print(f"speed-up        : {base_s / new_s:7.1f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
