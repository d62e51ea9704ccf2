"""The in-process engine's row path (engine/rows.py) answers every request exactly as the columnar
path does, and leaves to it what only it does: later copies of a key, values decided in review."""

from __future__ import annotations

import csv
import datetime as dt
import random
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from augment_core.reviews import Kept
from pipelines.augmenters.base import _values_path, python_values
from pipelines.augmenters.registry import augmenters
from pipelines.engine.chain import StepError
from pipelines.engine.inprocess import InProcessEngine
from pipelines.engine.rows import ROW_PATH_RECORDS, Columnar, augment_rows
from pipelines.inference.context import RunContext
from pipelines.workflows.loader import load_spec, parse_spec
from tests.unit.augmenters.test_arrow_path import EDGE_RECORDS

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))
from synth import organisations  # noqa: E402


def rows_of(engine: InProcessEngine, records: Sequence[Any]) -> Any:
    return augment_rows(engine.spec, engine.chain, engine.schema, engine.context, records)


def same_answers(engine: InProcessEngine, records: Sequence[Any]) -> None:
    outcome = rows_of(engine, records)
    assert not isinstance(outcome, Columnar)
    columnar = engine.augment_columnar(list(records))
    assert (outcome[0], outcome[1]) == (columnar.records, columnar.invalid), records
    # Types too: 1 == 1.0 == True would hide a value that changed type.
    assert [[type(v) for v in r.values()] for r in outcome[0]] == \
        [[type(v) for v in r.values()] for r in columnar.records]


@pytest.fixture(scope="module")
def sample() -> InProcessEngine:
    return InProcessEngine(load_spec(ROOT / "configs/workflows/organisations.yaml"))


def test_every_sample_record_one_at_a_time_and_in_small_requests(sample: InProcessEngine) -> None:
    with (ROOT / "configs/data/organisations.csv").open(encoding="utf-8") as handle:
        records: list[Any] = list(csv.DictReader(handle)) + EDGE_RECORDS
    records += organisations(600, seed=23)  # about one in eight invalid
    records += [None, [], {"org_id": 5}, {"org_id": "ORG-12345", "name": "\ud800"}]  # unreadable ones
    rng = random.Random(4)
    for record in records:
        same_answers(sample, [record])
    for _ in range(60):
        size = rng.randint(2, ROW_PATH_RECORDS)
        picked = rng.sample(records, size)
        keys = [r.get("org_id") for r in picked if isinstance(r, dict)]
        if len(set(keys)) == len(keys):
            same_answers(sample, picked)


def test_later_copies_of_a_key_go_the_columnar_way(sample: InProcessEngine) -> None:
    record = organisations(1, seed=1)[0]
    assert rows_of(sample, [record, dict(record)]) == Columnar(None)
    result = sample.augment([record, dict(record)])
    assert len(result.records) == 1 and result.invalid[0]["index"] == 1
    assert "duplicate key" in result.invalid[0]["errors"][0]["reason"]


class Deciding:
    """Decides `website_url` of every record; counts how often it is asked."""

    def __init__(self) -> None:
        self.asked = 0

    def __call__(self, record_uuids: Sequence[str], types: Mapping[str, pa.DataType]) -> dict[tuple[str, str], Kept]:
        self.asked += 1
        return {(r, "website_url"): Kept("edited", "https://decided.example/", 7) for r in record_uuids}


def test_decided_values_go_the_columnar_way_with_the_one_lookup() -> None:
    spec = load_spec(ROOT / "configs/workflows/organisations.yaml")
    lookup = Deciding()
    engine = InProcessEngine(spec, RunContext(providers=spec.providers, decisions=lookup))
    record = organisations(1, seed=2)[0]
    result = engine.augment([record])
    assert lookup.asked == 1
    assert result.records[0]["website_url"] == "https://decided.example/"
    # Nothing decided: the row path, with the same one lookup.
    nobody = InProcessEngine(spec, RunContext(providers=spec.providers, decisions=lambda ids, types: {}))
    assert not isinstance(rows_of(nobody, [record]), Columnar)


TYPES_SPEC = """\
name: typed
source: {kind: csv, path: x.csv}
schema:
  fields:
    label: {type: string}
    count: {type: integer}
    ratio: {type: float}
    active: {type: boolean}
    day: {type: date}
    seen: {type: datetime}
steps:
  - use: derive
    name: scaled
    params: {column: scaled, expression: "ratio * count", type: float}
  - use: derive
    name: relabel
    overwrite: true
    params: {column: label, expression: "label + '!'", type: string}
  - use: text_stats
    params: {column: label}
sink: {dataset: typed}
"""


def test_every_field_type_and_an_overwritten_column_come_back_as_the_columnar_path_gives_them() -> None:
    engine = InProcessEngine(parse_spec(yaml.safe_load(TYPES_SPEC)))
    records = [
        {"label": "a b. c", "count": "3", "ratio": "0.5", "active": "yes", "day": "2026-02-03",
         "seen": "2026-02-03T04:05:06+02:00"},
        {"label": None, "count": 2, "ratio": 1e308, "active": True, "day": None, "seen": "2026-02-03 04:05"},
        {"label": "x", "count": "9223372036854775807", "ratio": "-0", "active": "0"},
        {"count": "1.5", "ratio": "nan", "day": "2026-13-01"},  # invalid
    ]
    for record in records:
        same_answers(engine, [record])
    same_answers(engine, records)
    answered = rows_of(engine, records[:1])[0][0]
    assert answered["label"] == "a b. c!" and isinstance(answered["seen"], dt.datetime)


def test_a_step_that_raises_is_a_step_error_as_on_the_columnar_path(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = InProcessEngine(parse_spec(yaml.safe_load(TYPES_SPEC)))

    def broken(batch: pa.Table) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(engine.chain[1], "process_arrow", broken)
    record = {"label": "a", "count": "3", "ratio": "0.5"}
    with pytest.raises(StepError) as columnar:
        engine.augment_columnar([record])
    with pytest.raises(StepError) as rows:
        engine.augment([record])
    assert str(rows.value) == str(columnar.value)


def test_steps_that_work_value_by_value_take_their_python_path() -> None:
    known = augmenters()
    for name in ("clean_company_name", "normalize_url", "normalize_email", "normalize_country", "normalize_phone",
                 "text_stats", "lookup"):
        assert _values_path(known[name]), name
    for name in ("derive", "llm", "http", "embed", "waterfall"):  # Arrow's semantics, or no Arrow path at all
        assert not _values_path(known[name]), name


@pytest.mark.parametrize(("values", "arrow_type"), [
    (["a", None], pa.string()),
    ([1, None, 2**63 - 1], pa.int64()),
    ([1.5, None, float("nan")], pa.float64()),  # NaN becomes null, as to_arrow makes it
    ([1, 2.5], pa.float64()),  # an int in a float column becomes a float
    ([True, None], pa.bool_()),
    ([dt.date(2026, 1, 2), None], pa.date32()),
    (pa.array([3, None], pa.int32()), pa.int64()),
    (["x"], pa.large_string()),
])
def test_python_values_are_what_the_arrow_column_gives_back(values: Any, arrow_type: pa.DataType) -> None:
    from pipelines.augmenters.base import to_arrow

    expected = to_arrow(values, arrow_type).to_pylist()
    got = python_values(values, arrow_type)
    assert repr(got) == repr(expected)
    assert [type(v) for v in got] == [type(v) for v in expected]


def test_a_value_arrow_refuses_is_refused_by_python_values_too() -> None:
    with pytest.raises(pa.ArrowTypeError):
        python_values([True, 0], pa.int64())
    with pytest.raises(OverflowError):  # what to_arrow raises for it
        python_values([2**63], pa.int64())
