"""Throughput of the sample workflow: one Python process vs a run on Ray Data vs plain pandas.

All three sides validate and augment the same synthetic organisation records (bench/synth.py):
the in-process side through `InProcessEngine` in chunks, the Ray side as a real run (read CSV,
validate, quarantine, augment, write Parquet, catalog), and the pandas side as a careful pandas
user's script of the same operations (bench/pandas_baseline.py), which shares no code of ours.
The in-process and pandas sides each run in a process of their own, started for them (untimed), so
that their leftovers weigh neither on the Ray run's time nor on its memory. Prints rows/s and the
ratios for each size, checks that the three give the same valid records with the same values, and
prints the peak memory (PSS) of a Ray run: the driver plus every process of the private Ray
instance this script starts, read during a second, untimed run of the same records. Unless
--cold, one small untimed run goes first: a run is timed as it goes on a running cluster (a driver
such as the API that has run before).

    .venv/bin/python bench/batch_vs_inprocess.py --rows 20000 100000
    .venv/bin/python bench/batch_vs_inprocess.py --rows 4000000 --only ray   # memory at scale
    .venv/bin/python bench/batch_vs_inprocess.py --rows 200000 --only ray --cold   # a fresh instance
"""

from __future__ import annotations

import argparse
import csv
import logging
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import yaml  # noqa: E402
from pandas_baseline import enrich  # noqa: E402
from synth import organisations, write  # noqa: E402

from actors.runs import start_run  # noqa: E402
from augment_core.settings import Settings  # noqa: E402
from augment_core.store import open_store  # noqa: E402
from cluster.local import LocalCluster  # noqa: E402
from pipelines.engine.chain import output_schema  # noqa: E402
from pipelines.engine.inprocess import InProcessEngine  # noqa: E402
from pipelines.workflows.loader import load_spec  # noqa: E402

CHUNK = 10_000
SIDES = ("inprocess", "pandas", "ray")
LABELS = {"inprocess": "in-process", "pandas": "pandas", "ray": "Ray"}
KEY = "org_id"
REGIONS = ROOT / "configs/data/country_regions.csv"
MIB = 1 << 20
T = TypeVar("T")


def spec_for(data: Path, folder: Path) -> Path:
    spec = yaml.safe_load((ROOT / "configs/workflows/organisations.yaml").read_text())
    spec["source"]["path"] = str(data)
    # The sample's ORG-\d{5} holds 100,000 ids; synth.py numbers ORG-100000 and up past that, which
    # would leave most of a larger benchmark in quarantine. Same share of valid records at every size.
    spec["schema"]["fields"]["org_id"]["regex"] = "ORG-\\d{5,}"
    for step in spec["steps"]:
        if "reference" in step["params"]:
            step["params"]["reference"] = str(REGIONS)
    spec["sink"]["export_csv"] = False
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def in_process(spec_path: Path, data: Path) -> tuple[float, pa.Table]:
    """(seconds, the augmented records). Turning each chunk's records into Arrow for the check is
    left out of the time."""
    start = time.perf_counter()
    workflow = InProcessEngine(load_spec(spec_path))
    with data.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    parts, untimed = [], 0.0
    for i in range(0, len(rows), CHUNK):
        records = workflow.augment(rows[i : i + CHUNK]).records
        mark = time.perf_counter()
        parts.append(pa.Table.from_pylist(records, schema=workflow.schema))
        untimed += time.perf_counter() - mark
    return time.perf_counter() - start - untimed, pa.concat_tables(parts)


def with_pandas(data: Path) -> tuple[float, pa.Table]:
    start = time.perf_counter()
    enriched = enrich(data, REGIONS)
    seconds = time.perf_counter() - start
    return seconds, pa.Table.from_pandas(enriched, preserve_index=False)


def side_to_file(side: str, spec_path: Path, data: Path, out: Path) -> tuple[float, int]:
    """(seconds, valid records) of the in-process or pandas side, its output written to `out`
    (untimed). Run in a process of its own, so that what it leaves behind (a million records'
    worth of Python and Arrow memory) stays out of this script's process, the Ray run's driver,
    whose memory counts in the run's peak."""
    seconds, table = in_process(spec_path, data) if side == "inprocess" else with_pandas(data)
    pq.write_table(table, out)
    return seconds, table.num_rows


def synthetic_file(n: int, data: Path) -> None:
    write(organisations(n, seed=11), data, "csv")


def in_own_process(work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` in a new process: what it leaves behind stays out of this one (the Ray run's driver)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        return child.submit(work, *args).result()


def on_ray(spec_path: Path, settings: Settings) -> tuple[float, int, str, str]:
    """(seconds, valid records, work seconds by step, the output folder)."""
    start = time.perf_counter()
    run_id, (_, final) = start_run(settings, load_spec(spec_path), str(spec_path))
    ray.get(final)
    elapsed = time.perf_counter() - start
    run = open_store(settings).get_run(run_id)
    assert run.status == "succeeded", run.error
    steps = ", ".join(f"{s.name} {s.seconds:.1f}" for s in run.steps if s.seconds)
    return elapsed, run.counts["valid"], f"work seconds by step (all workers): {steps}", run.output["path"]


def warm_up(folder: Path, settings: Settings) -> None:
    """One small run, untimed: what a run on a running cluster finds already started."""
    folder.mkdir()
    data = folder / "orgs.csv"
    write(organisations(2_000, seed=3), data, "csv")
    on_ray(spec_for(data, folder), settings)


class PeakPss:
    """Peak, while in use, of the PSS summed over this process, its descendants and every process
    of the Ray instance whose temp dir is `ray_dir`, sampled on a thread every `interval` seconds.

    PSS shares each shared page (the object store, libraries) among the processes mapping it, so
    the sum counts it once. A Ray process belongs if it descends from this driver (gcs, raylet and,
    under it, the workers), or names `ray_dir` in its command line or as its stdout/stderr (in case
    one was re-parented). Reading a process's PSS makes the kernel walk its page tables (about
    2 ms for an idle one): the dozen or so dashboard and agent processes, whose memory barely moves,
    are read every OTHERS_EVERY samples only, so that sampling takes little of a 2-core machine."""

    OTHERS_EVERY = 8

    def __init__(self, ray_dir: str, interval: float) -> None:
        import psutil  # Ray's own copy (ray/thirdparty_files), importable once ray is imported

        self.psutil = psutil
        self.ray_dir, self.interval = ray_dir, interval
        self.driver = psutil.Process()
        self.peak, self.samples, self.cpu_seconds = 0, 0, 0.0
        self.peak_parts: Counter[str] = Counter()  # kind -> PSS at the peak
        self.peak_counts: Counter[str] = Counter()  # kind -> processes at the peak
        self._ours: dict[tuple[int, float], bool] = {}  # (pid, start time): judged once per process
        self._last: dict[int, tuple[str, int]] = {}  # pid -> (kind, PSS) of the last reading
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pss-sampler", daemon=True)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.interval):
                self.cpu_seconds = time.thread_time()
                return

    def _sample(self) -> None:
        everything = self.samples % self.OTHERS_EVERY == 0
        readings: dict[int, tuple[str, int]] = {}
        for proc in self._members():
            last = self._last.get(proc.pid)
            if last is not None and last[0] == "other" and not everything:
                readings[proc.pid] = last
                continue
            try:
                readings[proc.pid] = (self._kind(proc), proc.memory_full_info().pss)  # smaps_rollup
            except (self.psutil.Error, OSError):  # ended between listing and reading
                continue
        self._last = readings
        self.samples += 1
        parts: Counter[str] = Counter()
        for kind, pss in readings.values():
            parts[kind] += pss
        if parts.total() > self.peak:
            self.peak, self.peak_parts = parts.total(), parts
            self.peak_counts = Counter(kind for kind, _ in readings.values())

    def _members(self) -> list[Any]:
        found = {proc.pid: proc for proc in [self.driver, *self.driver.children(recursive=True)]}
        for proc in self.psutil.process_iter():
            if proc.pid in found:
                continue
            try:
                key = (proc.pid, proc.create_time())
            except self.psutil.Error:
                continue
            if key not in self._ours:
                self._ours[key] = self._of_ray_dir(proc)
            if self._ours[key]:
                found[proc.pid] = proc
        return list(found.values())

    def _of_ray_dir(self, proc: Any) -> bool:
        try:
            if any(self.ray_dir in part for part in proc.cmdline()):
                return True
            return any(os.readlink(f"/proc/{proc.pid}/fd/{fd}").startswith(self.ray_dir) for fd in (1, 2))
        except (self.psutil.Error, OSError):
            return False

    def _kind(self, proc: Any) -> str:
        if proc.pid == self.driver.pid:
            return "driver"
        name = proc.name()
        if name in ("raylet", "gcs_server"):
            return name
        if name.startswith("ray::") and not name.endswith("Agent"):  # ray::IDLE, ray::MapWorker(...), ...
            return "workers"
        return "other"  # the dashboard and its modules, the agents, the monitors

    def summary(self) -> str:
        parts = ", ".join(f"{kind} {size / MIB:,.0f}" + (f" in {n}" if (n := self.peak_counts[kind]) > 1 else "")
                          for kind, size in self.peak_parts.most_common())
        return (f"Ray run peak PSS: {self.peak / MIB:,.0f} MiB ({parts}); {self.samples} samples every "
                f"{self.interval} s, {self.cpu_seconds:.1f} s of CPU")


# --- the check ----------------------------------------------------------------------------------


def first_per_key(table: pa.Table) -> tuple[pa.Table, int]:
    """The first record of each key, in order, and how many later ones were left out."""
    keys = table.column(KEY).combine_chunks()
    first = pc.index_in(keys, value_set=keys)  # where each key first occurs
    kept = table.filter(pc.equal(first, pa.array(range(len(keys)), pa.int32())))
    return kept, table.num_rows - kept.num_rows


def same(a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.ChunkedArray:
    """Equal values, or both null."""
    return pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(pc.is_null(a), pc.is_null(b)))


def check(outputs: dict[str, pa.Table], schema: pa.Schema, examples: int = 3) -> list[str]:
    """Lines saying whether the sides gave the same valid records (by key) with the same values in
    every column of `schema` that both sides have, each side against Ray (else in-process)."""
    lines: list[str] = []
    tables: dict[str, pa.Table] = {}
    ok = True
    for side, table in outputs.items():
        names = [f.name for f in schema if f.name in table.column_names]
        table, later = first_per_key(table.select(names).cast(pa.schema([schema.field(n) for n in names])))
        if later and side == "inprocess":
            # The engine is called per chunk and judges duplicate keys within a call only.
            lines.append(f"{LABELS[side]}: {later} later record(s) of a key first seen in an earlier "
                         f"{CHUNK:,}-row chunk, left out of the check")
        elif later:
            ok = False
            lines.append(f"{LABELS[side]}: {later} record(s) repeat an earlier one's key, left out of the check")
        tables[side] = table
    common = pc.unique(next(iter(tables.values()))[KEY].combine_chunks())
    for table in tables.values():
        common = common.filter(pc.is_in(common, value_set=table[KEY].combine_chunks()))
    for side, table in tables.items():
        inside = pc.is_in(table[KEY], value_set=common)
        if table.num_rows > len(common):
            ok = False
            lines.append(f"{LABELS[side]}: {table.num_rows - len(common)} record(s) with a key some other side "
                         f"lacks, e.g. {table.filter(pc.invert(inside))[KEY][:examples].to_pylist()}")
        tables[side] = table.filter(inside).sort_by(KEY)
    reference = "ray" if "ray" in tables else "inprocess"
    base = tables[reference]
    for side, table in tables.items():
        if side == reference:
            continue
        columns = [n for n in table.column_names if n in base.column_names]
        bad = []
        for name in columns:
            differs = pc.invert(same(table[name], base[name])).combine_chunks()
            if count := pc.sum(differs).as_py():
                shown = "; ".join(f"{base[KEY][i]}: {table[name][i]} vs {base[name][i]}"
                                  for i in pc.indices_nonzero(differs)[:examples].to_pylist())
                bad.append(f"  {name}: {count} differ ({LABELS[side]} vs {LABELS[reference]}), e.g. {shown}")
        ok &= not bad
        verdict = f"{len(bad)} of {len(columns)} columns differ" if bad else "all values match"
        lines.append(f"{LABELS[side]} vs {LABELS[reference]}: {len(common)} records, {len(columns)} columns: {verdict}")
        lines.extend(bad)
    lines.append(f"outputs match: {'yes' if ok else 'NO'}")
    return lines


# --- the run ------------------------------------------------------------------------------------


def ratio(seconds: dict[str, float], side: str, other: str) -> str:
    """`side`'s rows/s over `other`'s, when both ran."""
    return f"{seconds[other] / seconds[side]:.2f}x" if side in seconds and other in seconds else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--object-store-mb", type=int, default=LocalCluster.object_store_bytes // 1_000_000,
                        help="the Ray instance's object store, as `augment run` and `augment cluster up` size it"
                             " (0: Ray's default, 30%% of memory); beyond it Ray Data spills blocks to disk")
    parser.add_argument("--only", nargs="+", choices=SIDES, default=list(SIDES), metavar="SIDE",
                        help=f"run only these sides, of {', '.join(SIDES)} (e.g. --only ray for memory at scale)")
    parser.add_argument("--cold", action="store_true",
                        help="time the first Ray run on a fresh instance; by default one run of 2,000 rows goes"
                             " first, untimed, as on a running cluster (its alert watcher, reaper and Ray Data's"
                             " own actors started, worker processes of the driver's job up)")
    parser.add_argument("--sample-interval", type=float, default=0.5, metavar="SECONDS",
                        help="how often the Ray run's memory is sampled")
    args = parser.parse_args()
    sides = [side for side in SIDES if side in args.only]
    # ignore_cleanup_errors: Ray's last processes may still be closing their logs in it.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        folder = Path(tmp)
        settings = Settings(storage_root=str(folder / "data"), database_url=f"sqlite:///{folder / 'bench.db'}")
        ray_dir = str(folder / "ray")  # this instance's own: its processes name it, no other Ray does
        if "ray" in sides:
            ray.init(address="local", logging_level=logging.ERROR, log_to_driver=False, _temp_dir=ray_dir,
                     object_store_memory=args.object_store_mb * 1_000_000 if args.object_store_mb else None)
        if "ray" in sides and not args.cold:
            warm_up(folder / "warm-up", settings)
        print(f"{'rows':>9} {'in-process rows/s':>18} {'Ray Data rows/s':>16} {'Ray / in-process':>17} "
              f"{'pandas rows/s':>14} {'Ray / pandas':>13} {'in-process / pandas':>20}")
        for n in args.rows:
            data = folder / f"orgs-{n}.csv"
            in_own_process(synthetic_file, n, data)  # a million records' worth of Python objects, made elsewhere
            spec_path = spec_for(data, folder)
            seconds: dict[str, float] = {}
            outputs: dict[str, Path] = {}  # side -> its output's Parquet file or folder
            valid: dict[str, int] = {}
            notes: list[str] = []
            for side in ("inprocess", "pandas"):
                if side in sides:
                    outputs[side] = folder / f"{side}-{n}.parquet"
                    seconds[side], valid[side] = in_own_process(side_to_file, side, spec_path, data, outputs[side])
            if "ray" in sides:
                seconds["ray"], valid["ray"], steps, output_path = on_ray(spec_path, settings)
                outputs["ray"] = Path(output_path)
                notes.append(steps)
                # Memory from a second run of the same records, untimed: reading every process's PSS
                # takes CPU (5 s of a 1 M-row run's 38), which the other sides are not charged.
                with PeakPss(ray_dir, args.sample_interval) as memory:
                    on_ray(spec_path, settings)
                notes.append(f"{memory.summary()} (a second run, untimed)")
            rates = {side: f"{n / s:,.0f}" for side, s in seconds.items()}
            # Chunked in-process dedupe only sees duplicates within a chunk; counts may differ by those.
            counts = ", ".join(f"{count} {LABELS[side]}" for side, count in valid.items())
            print(f"{n:>9} {rates.get('inprocess', '-'):>18} {rates.get('ray', '-'):>16} "
                  f"{ratio(seconds, 'ray', 'inprocess'):>17} {rates.get('pandas', '-'):>14} "
                  f"{ratio(seconds, 'ray', 'pandas'):>13} {ratio(seconds, 'inprocess', 'pandas'):>20}"
                  f"   (valid: {counts})")
            if len(outputs) > 1:
                notes += check({side: pq.read_table(path) for side, path in outputs.items()},
                               output_schema(load_spec(spec_path)))
            for note in notes:
                print(f"{'':>9} {note}")
        if "ray" in sides:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
