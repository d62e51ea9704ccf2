"""The built-in steps' Arrow path (`process_arrow`, which `compute` takes before `process_batch`)
gives exactly the tables their `process_batch` gives, and text_stats' narrowed patterns count
exactly as the full ones: an online request's one record must be answered as a batch run would."""

from __future__ import annotations

import csv
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.augmenters import text_stats
from pipelines.augmenters.base import Augmenter, _arrow_path, plain, produced_values, string_values
from pipelines.augmenters.clean_company_name import CleanCompanyName
from pipelines.augmenters.registry import augmenters, build_step
from pipelines.augmenters.single_column import ColumnParams
from pipelines.engine.chain import split_valid
from pipelines.engine.inprocess import InProcessEngine
from pipelines.engine.validation import validate_table
from pipelines.spec.workflow import StepSpec
from pipelines.workflows.loader import load_spec

ROOT = Path(__file__).resolve().parents[3]
SPEC = ROOT / "configs/workflows/organisations.yaml"
EDGE_RECORDS = [
    {"org_id": "ORG-90001", "name": "  ACME  WIDGETS, LTD. ", "website": " ", "email": None, "phone": "",
     "country": "  ", "employees": "7", "description": "   "},
    {"org_id": "ORG-90002", "name": "東京テック株式会社", "website": "東京.jp", "email": "info@例え.jp",
     "phone": "+81 3-1234-5678", "country": "JP", "employees": "1200",
     "description": "東京テックは。ソフト！ Über 3.14 l’été… ٣٤ Ⅻ x²\u3000\u2028 done"},
    {"org_id": "ORG-90003", "name": "Ñandú S.A.", "description": "\x1e.\x1e! ?", "country": "Österreich",
     "employees": "50"},
    {"org_id": "ORG-90004", "name": "Zero Co", "description": "𝟘𝟙 𠀀 😀 e\u0301 \U00011f04\U00011f05 a.b,1"},
]


def pandas_path(step: Augmenter, table: pa.Table) -> pa.Table:
    """The step as it ran before the Arrow path: its `process_batch` on the DataFrame of its columns."""
    columns = list(dict.fromkeys(column for _, column in step.reads()))
    return step.attach(table, step.process_batch(table.select(columns).to_pandas(types_mapper=pd.ArrowDtype)))


def same(a: pa.Table, b: pa.Table) -> None:
    assert a.schema.equals(b.schema, check_metadata=True)
    assert a.equals(b), [(n, a[n].to_pylist(), b[n].to_pylist()) for n in a.column_names if not a[n].equals(b[n])]


@pytest.fixture(scope="module")
def sample() -> tuple[InProcessEngine, pa.Table]:
    """The sample workflow's engine and its sample records (and a few odd ones) validated."""
    engine = InProcessEngine(load_spec(SPEC))
    with (ROOT / "configs/data/organisations.csv").open(encoding="utf-8") as handle:
        rows: list[Any] = list(csv.DictReader(handle)) + EDGE_RECORDS
    return engine, split_valid(validate_table(engine.raw_table(rows), engine.spec.schema_), True)


def test_every_step_of_the_sample_gives_the_tables_process_batch_gives(
        sample: tuple[InProcessEngine, pa.Table]) -> None:
    engine, table = sample
    assert table.num_rows > 250
    for step in engine.chain:
        assert _arrow_path(type(step)), step.name
        fast = step.apply(table)
        same(fast, pandas_path(step, table))
        for i in range(0, table.num_rows, 3):  # one record at a time, as the API sends it
            record = table.slice(i, 1)
            same(step.apply(record), pandas_path(step, record))
        same(step.apply(table.slice(0, 0)), pandas_path(step, table.slice(0, 0)))
        table = fast


def test_text_stats_counts_one_record_as_a_large_batch_counts_it(sample: tuple[InProcessEngine, pa.Table]) -> None:
    # More rows than _NARROW_ROWS: the full Unicode patterns; one row: the patterns narrowed to it.
    engine, table = sample
    step = next(s for s in engine.chain if s.name == "text_stats")
    large = pa.concat_tables([table] * (text_stats._NARROW_ROWS // table.num_rows + 1))
    assert large.num_rows > text_stats._NARROW_ROWS
    counted = step.apply(large).select(list(step.adds()))
    for i in range(table.num_rows):
        assert step.apply(large.slice(i, 1)).select(list(step.adds())) == counted.slice(i, 1)


# Characters where the classes matter: letters, marks, digits and numbers of several scripts, the
# separators and ends of sentences, and characters past the blocks learnt up front (astral digits,
# CJK extension B, an emoji, Kawi of Unicode 15).
ALPHABET = [*"aZ_09 .,!?-'’…。！？\t\n\x0b\x1e", "é", "\u0301", "ß", "Ω", "ж", "٣", "३", "²", "½", "Ⅻ", "〇",
            "\u00a0", "\u3000", "\u2028", "東", "ア", "\uff10", "𝟘", "𠀀", "😀", "\U00011f04", "\U00011f50"]


def test_narrowed_patterns_count_exactly_as_the_full_ones_on_random_text() -> None:
    rng = random.Random(20)
    texts: list[str | None] = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 14))) for _ in range(1500)]
    texts += [None, "", "   ", "x"]
    step = build_step(StepSpec(use="text_stats", params={"column": "t"}), "s")
    step.setup()
    assert len(texts) > text_stats._NARROW_ROWS
    full = step.counts(pa.array(texts, pa.string()))  # one batch: the full patterns
    for i, text in enumerate(texts):
        one = step.counts(pa.array([text], pa.string()))  # narrowed to this text
        expected = {column: values[i : i + 1].to_pylist() for column, values in full.items()}
        assert {column: values.to_pylist() for column, values in one.items()} == expected, text


def test_class_membership_is_re2s_own_and_learnt_for_unseen_blocks() -> None:
    word, _ = text_stats.narrowed(["𝟘 ok"])  # U+1D7D8: a digit outside the blocks learnt up front
    assert 0x1D7D8 // text_stats._BLOCK in text_stats._members
    assert "\\x{1d7d8}" in word
    members = dict(zip(("word", "letter_or_digit", "digit"), text_stats._members[0]))
    assert {"a", "Z", "0", "_"} <= members["word"] and "_" not in members["letter_or_digit"]
    assert members["digit"] == set("0123456789²³¹¼½¾") and "-" not in members["word"]  # Latin-1 has numbers too
    combining = text_stats._members[0x0301 // text_stats._BLOCK]
    assert "\u0301" in combining[0] and "\u0301" not in combining[1]  # a mark: in words, not a letter


def test_classes_are_written_as_ranges() -> None:
    assert text_stats._class("cab") == "[\\x{61}-\\x{63}]"
    assert text_stats._class("aé_") == "[\\x{5f}\\x{61}\\x{e9}]"


# --- which steps take the Arrow path ---------------------------------------------------------------


def test_only_steps_with_their_own_process_arrow_take_it() -> None:
    known = augmenters()
    for name in ("clean_company_name", "normalize_url", "normalize_email", "normalize_country", "normalize_phone",
                 "text_stats", "lookup", "derive"):
        assert _arrow_path(known[name]), name
    for name in ("llm", "http", "embed", "waterfall"):
        assert not _arrow_path(known[name]), name


class Shouting(CleanCompanyName):
    """A subclass that overrides the hook: its own process_batch must run, not the parent's Arrow path."""

    def process_batch(self, batch: pd.DataFrame) -> Mapping[str, Sequence[Any] | pd.Series]:
        return {k: [v.upper() if isinstance(v, str) else v for v in values]
                for k, values in super().process_batch(batch).items()}


def test_a_subclass_overriding_process_batch_gets_it_run() -> None:
    assert not _arrow_path(Shouting)
    step = Shouting(ColumnParams(column="name"), "s")
    out = step.apply(pa.table({"name": ["acme widgets ltd"]}))
    assert out["name_clean"].to_pylist() == ["ACME WIDGETS"]


def test_a_column_of_another_type_is_left_to_process_batch() -> None:
    step = build_step(StepSpec(use="normalize_email", params={"column": "email"}), "s")
    assert string_values(pa.array([1, None])) is None
    assert step.process_arrow(pa.table({"email": pa.array([1])})) is None
    assert string_values(pa.array(["a", None], pa.large_string())) == ["a", None]


def test_produced_values_are_python_values_whatever_a_step_returned() -> None:
    floats = [1.5, None, float("nan")]
    assert produced_values(pd.Series(floats)) == [1.5, None, None]
    assert produced_values(pa.array(floats, from_pandas=False)) == [1.5, None, None]
    assert produced_values(pa.chunked_array([["a"], [None]])) == ["a", None]
    assert produced_values(("x", None)) == ["x", None]


@pytest.mark.parametrize("column", [
    pa.chunked_array([pa.array(["a", None]), pa.array([""])]),
    pa.chunked_array([pa.array(["a", None], pa.large_string())]),
    pa.chunked_array([pa.array([1, None], pa.int8()), pa.array([2**7 - 1], pa.int8())]),
    pa.chunked_array([pa.array([2**63 - 1, None])]),
    pa.chunked_array([pa.array([1.5, None, float("nan"), float("inf")])]),
    pa.chunked_array([pa.array([1.5, float("nan")], pa.float32())]),
    pa.chunked_array([pa.array([True, None, False])]),
    pa.chunked_array([pa.array([0, None], pa.date32())]),
    pa.chunked_array([pa.array([0, None, 2**40], pa.timestamp("us", tz="UTC"))]),
    pa.chunked_array([pa.array([0, None], pa.timestamp("ns"))]),
    pa.chunked_array([], pa.string()),
])
def test_a_plain_column_is_the_same_arrow_data_after_a_trip_through_a_dataframe(column: pa.ChunkedArray) -> None:
    # What lookup and derive take: process_batch reads pa.array(batch[name]), the Arrow path the column.
    assert plain(column.type)
    back = pa.array(pa.table({"c": column}).to_pandas(types_mapper=pd.ArrowDtype)["c"])
    back = back.combine_chunks() if isinstance(back, pa.ChunkedArray) else back
    direct = column.combine_chunks()
    assert back.type == direct.type and back.null_count == direct.null_count
    assert repr(back.to_pylist()) == repr(direct.to_pylist())  # nan stays nan, not null


def test_a_derive_reading_no_column_gives_one_value_per_row_both_ways() -> None:
    step = build_step(StepSpec(use="derive", params={"column": "x", "expression": "1 + 2", "type": "integer"}), "s")
    table = pa.table({"a": [1, 2, 3]})
    same(step.apply(table), pandas_path(step, table))
    assert step.apply(table)["x"].to_pylist() == [3, 3, 3]


# --- the row path's Python values (engine/rows.py) --------------------------------------------------


def test_python_patterns_count_exactly_as_the_full_ones_on_random_text() -> None:
    rng = random.Random(21)
    texts: list[str | None] = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 14))) for _ in range(1500)]
    texts += [None, "", "   ", "x", "a.\u00a0b", "end.\n", "3.14 e.g x", "\x1e.\x1e! ?", "ok…", "「東京。」次！"]
    step = build_step(StepSpec(use="text_stats", params={"column": "t"}), "s")
    step.setup()
    full = {column: values.to_pylist() for column, values in step.counts(pa.array(texts, pa.string())).items()}
    types = {"t": pa.string()}
    for i, text in enumerate(texts):
        one = step.process_values({"t": [text]}, types)
        assert one == {column: values[i : i + 1] for column, values in full.items()}, text
    assert step.process_values({"t": texts[:40]}, types) == {column: values[:40] for column, values in full.items()}
    assert step.process_values({"t": [1]}, {"t": pa.int64()}) is None  # left to the Arrow way


def test_python_patterns_spell_every_class_out() -> None:
    word, sentence_end, sentence = text_stats.python_patterns(["été 𝟘"])
    assert "\\p" not in word.pattern + sentence_end.pattern + sentence.pattern
    assert "é" in word.pattern and "𝟘" in word.pattern and "\\Z" in sentence_end.pattern


def region_step(case_insensitive: bool) -> Augmenter:
    step = build_step(StepSpec(use="lookup", params={
        "reference": str(ROOT / "configs/data/country_regions.csv"), "column": "country_code",
        "columns": ["region", "currency"], "case_insensitive": case_insensitive}), "region")
    step.setup()
    return step


@pytest.mark.parametrize("case_insensitive", [False, True])
def test_lookup_python_path_brings_what_the_join_brings(case_insensitive: bool) -> None:
    step = region_step(case_insensitive)
    codes = [row["country_code"] for row in csv.DictReader((ROOT / "configs/data/country_regions.csv").open())]
    keys: list[str | None] = codes + [c.lower() for c in codes] + [None, "", "ZZ", "gb", "G B", "Gb", "1"]
    types = {"country_code": pa.string()}
    got = step.process_values({"country_code": keys}, types)
    expected = {column: values.to_pylist() for column, values in step.joined(pa.array(keys, pa.string())).items()}
    assert got == expected
    for odd in [" GB", "GB ", "\tGB", "GB\x1c", "ÉT", "\u00a0GB"]:  # what only the kernels normalise
        assert step.process_values({"country_code": [odd]}, types) is None, odd
    assert step.process_values({"country_code": ["1"]}, {"country_code": pa.int64()}) is None


def test_ascii_keys_are_normalised_by_python_as_by_the_kernels() -> None:
    # lookup's Python path relies on these: for ASCII, utf8_trim_whitespace trims what str.isspace
    # calls space (and nothing else), and utf8_lower is str.lower.
    chars = [chr(c) for c in range(128)]
    trimmed = pc.utf8_trim_whitespace(pa.array([f"{c}x{c}" for c in chars])).to_pylist()
    assert [t == "x" for t in trimmed] == [c.isspace() for c in chars]
    assert pc.utf8_lower(pa.array(chars)).to_pylist() == [c.lower() for c in chars]
