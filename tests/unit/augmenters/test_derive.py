"""derive and its expression language: exact values, nulls, and what is refused before a run."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from pipelines.augmenters.expressions import ExpressionError
from pipelines.augmenters.registry import build_step
from pipelines.spec.errors import SpecError
from pipelines.spec.workflow import StepSpec
from pipelines.workflows.loader import parse_spec

ROWS = pa.table({
    "a": pa.array([7, -7, None, 4, 2**62], pa.int64()),
    "b": pa.array([2, 3, 0, 0, 4], pa.int64()),
    "f": pa.array([1.5, None, -2.5, 0.0, float("nan")], pa.float64()),
    "s": pa.array([" Foo ", "bar", None, "", "Ünï"], pa.string()),
    "ok": pa.array([True, False, None, True, False], pa.bool_()),
    "n": pa.array(["12", " 3.7 ", "x", None, "1e3"], pa.string()),
})


def derive(expression: str, type_: str = "string", table: pa.Table = ROWS) -> list[Any]:
    step = build_step(StepSpec(use="derive", params={"column": "out", "expression": expression, "type": type_}), "s")
    step.setup()
    result = step.apply(table.select([column for _, column in step.reads()]) if step.reads() else table)
    assert result.schema.field("out").type == {"string": pa.string(), "integer": pa.int64(),
                                               "float": pa.float64(), "boolean": pa.bool_()}[type_]
    return result["out"].to_pylist()


@pytest.mark.parametrize(("expression", "type_", "expected"), [
    ("a + b", "integer", [9, -4, None, 4, 2**62 + 4]),
    ("a - b * 2", "integer", [3, -13, None, 4, 2**62 - 8]),
    ("a / b", "float", [3.5, -7 / 3, None, None, 2**60]),  # x / 0 is null
    ("a // b", "integer", [3, -3, None, None, 2**60]),  # floor, as in Python
    ("a % b", "integer", [1, 2, None, None, 0]),
    ("a ** b", "integer", [49, -343, None, 1, None]),  # overflow is null
    ("a * b", "integer", [14, -21, None, 0, None]),
    ("-a", "integer", [-7, 7, None, -4, -(2**62)]),
    ("+a", "integer", [7, -7, None, 4, 2**62]),
    ("f / 0", "float", [None] * 5),
    ("a + f", "float", [8.5, None, None, 4.0, None]),  # nan is not a value
    ("2 ** -1", "float", [0.5] * 5),
    ("-7 // 2", "integer", [-4] * 5),
    ("-7.5 % 2", "float", [0.5] * 5),
    ("round(f)", "float", [2.0, None, -2.0, 0.0, None]),  # half to even, as Python
    ("round(a, -1)", "integer", [10, -10, None, 0, 4611686018427387900]),
    ("abs(a)", "integer", [7, 7, None, 4, 2**62]),
])
def test_arithmetic(expression: str, type_: str, expected: list[Any]) -> None:
    assert derive(expression, type_) == expected


@pytest.mark.parametrize(("expression", "type_", "expected"), [
    ("s + '!'", "string", [" Foo !", "bar!", None, "!", "Ünï!"]),  # + propagates nulls
    ("concat(s, '-', a)", "string", [" Foo -7", "bar--7", "-", "-4", "Ünï-4611686018427387904"]),  # concat does not
    ("upper(strip(s))", "string", ["FOO", "BAR", None, "", "ÜNÏ"]),
    ("lower(s)", "string", [" foo ", "bar", None, "", "ünï"]),
    ("len(s)", "integer", [5, 3, None, 0, 3]),
    ("coalesce(s, 'none')", "string", [" Foo ", "bar", "none", "", "Ünï"]),
    ("coalesce(f, a)", "float", [1.5, -7.0, -2.5, 0.0, None]),
    ("contains(s, 'o')", "boolean", [True, False, None, False, False]),
    ("starts_with(s, 'b')", "boolean", [False, True, None, False, False]),
    ("ends_with(lower(s), 'ï')", "boolean", [False, False, None, False, True]),
    ("is_null(s)", "boolean", [False, False, True, False, False]),
    ("is_null(f)", "boolean", [False, True, False, False, True]),
    ("to_integer(n)", "integer", [12, 3, None, None, 1000]),
    ("to_float(n)", "float", [12.0, 3.7, None, None, 1000.0]),
    ("to_string(a)", "string", ["7", "-7", None, "4", "4611686018427387904"]),
])
def test_functions(expression: str, type_: str, expected: list[Any]) -> None:
    assert derive(expression, type_) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("a > 0 and ok", [True, False, None, True, False]),
    ("a > 0 or ok", [True, False, None, True, True]),
    ("not ok", [False, True, None, False, True]),
    ("0 < a <= 7", [True, False, None, True, False]),
    ("s == 'bar'", [False, True, None, False, False]),
    ("s != 'bar'", [True, False, None, True, True]),
    ("is_null(a) or a >= 4", [True, False, True, True, True]),
])
def test_logic_is_elementwise_and_null_aware(expression: str, expected: list[Any]) -> None:
    assert derive(expression, "boolean") == expected


def test_conditional_and_literals_broadcast() -> None:
    assert derive("'pos' if a > 0 else 'neg'") == ["pos", "neg", None, "pos", "pos"]  # null condition: null
    assert derive("a if ok else f", "float") == [7.0, None, None, 4.0, None]
    assert derive("None if ok else a", "integer") == [None, -7, None, None, 2**62]
    assert derive("1 + 2", "integer") == [3] * 5
    assert derive("'x'") == ["x"] * 5
    assert derive("None", "float") == [None] * 5


@pytest.mark.parametrize(("expression", "type_", "expected"), [
    ("n", "integer", [12, 3, None, None, 1000]),
    ("n", "boolean", [None] * 5),
    ("f", "integer", [1, None, -2, 0, None]),  # truncated, as int() does
    ("a", "string", ["7", "-7", None, "4", "4611686018427387904"]),
    ("ok", "integer", [1, 0, None, 1, 0]),
    ("s", "float", [None] * 5),
])
def test_output_is_cast_to_the_declared_type_or_null(expression: str, type_: str, expected: list[Any]) -> None:
    assert derive(expression, type_) == expected


def test_words_convert_to_booleans() -> None:
    table = pa.table({"v": ["yes", "No", " TRUE ", "0", "maybe", None]})
    assert derive("v", "boolean", table) == [True, False, True, False, None, None]


def test_reads_lists_columns_in_order_of_appearance() -> None:
    step = build_step(StepSpec(use="derive", params={"column": "o", "expression": "concat(b, lower(a), b, c)"}), "s")
    assert step.reads() == [("expression", "b"), ("expression", "a"), ("expression", "c")]
    assert step.adds() == {"o": pa.string()}


@pytest.mark.parametrize(("expression", "message"), [
    ("__import__('os')", "function '__import__' is not allowed (allowed: abs, coalesce, concat, contains,"),
    ("name.__class__", "attribute access (x.y) is not allowed"),
    ("open('x')", "function 'open' is not allowed"),
    ("[x for x in y]", "comprehensions are not allowed"),
    ("x[0]", "subscripts (x[i]) are not allowed"),
    ("lambda: 1", "lambda is not allowed"),
    ("f'{x}'", "f-strings are not allowed (use concat)"),
    ("(y := 1)", "assignment (:=) is not allowed"),
    ("os.system('rm -rf /')", "function 'os.system' is not allowed"),
    ("x.upper()", "function 'x.upper' is not allowed"),
    ("__builtins__", "name '__builtins__' is not allowed"),
    ("_private", "name '_private' is not allowed"),
    ("x in y", "only == != < <= > >= compare"),
    ("x is None", "only == != < <= > >= compare (use is_null(x)"),
    ("x == None", "comparing with None is always null: use is_null(x)"),
    ("x | y", "operator BitOr is not allowed"),
    ("~x", "operator Invert is not allowed"),
    ("(1, 2)", "lists, tuples, sets and dicts are not allowed"),
    ("b'x'", "literal b'x' is not allowed"),
    ("2 ** 99999999999999999999", "literal 99999999999999999999 is not allowed"),
    ("len(x, y)", "len() takes 1 argument(s), got 2"),
    ("concat()", "concat() takes 1 or more argument(s), got 0"),
    ("lower(s=x)", "lower() takes no keyword arguments"),
    ("contains(s, t)", "contains()'s second argument must be a string literal"),
    ("round(x, y)", "round()'s second argument must be an integer literal"),
    ("x +", "invalid expression: invalid syntax"),
    ("1" + "+1" * 150, "expression is nested more than 100 levels deep"),
])
def test_unsafe_or_unknown_expressions_are_refused_at_params_validation(expression: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        build_step(StepSpec(use="derive", params={"column": "o", "expression": expression}), "s")
    (error,) = caught.value.errors()
    assert error["loc"] == ("expression",)
    assert error["msg"].removeprefix("Value error, ").startswith(message)


def test_spec_validation_names_the_step_and_param() -> None:
    spec = {
        "name": "w", "source": {"kind": "csv", "path": "in.csv"}, "schema": {"fields": {"name": {}}},
        "sink": {"dataset": "d"},
        "steps": [{"use": "text_stats", "params": {"column": "name"}},
                  {"use": "normalize_url", "params": {"column": "name"}},
                  {"use": "derive", "params": {"column": "o", "expression": "open('x')"}}],
    }
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    assert caught.value.errors == [
        "steps[2].params.expression: function 'open' is not allowed (allowed: abs, coalesce, concat, contains, "
        "ends_with, is_null, len, lower, round, starts_with, strip, to_float, to_integer, to_string, upper)"
    ]


@pytest.mark.parametrize(("expression", "message"), [
    ("s + a", "+ needs two numbers or two strings, got string and int64"),
    ("s * 2", "* needs numbers, got string and int64"),
    ("s > a", "> does not apply to string and int64"),
    ("a and ok", "and needs booleans, got int64"),
    ("lower(a)", "lower() does not apply to int64"),
    ("a if s else b", "the condition of x if c else y needs booleans, got string"),
    ("'x' if ok else 1", "x if c else y needs values of one type, got string and int64"),
    ("coalesce(s, a)", "coalesce() needs values of one type, got string and int64"),
])
def test_type_mismatches_are_expression_errors_naming_the_step(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        derive(expression)
    assert str(caught.value) == f"step 's': {message}, in {expression!r}"


def test_other_integer_and_string_widths_mix() -> None:
    table = pa.table({"i": pa.array([1, None], pa.int32()), "j": pa.array([10, 20], pa.int64()),
                      "t": pa.array(["a", None], pa.large_string())})
    assert derive("i + j", "integer", table) == [11, None]
    assert derive("coalesce(i, j)", "integer", table) == [1, 20]
    assert derive("upper(t) + '!'", "string", table) == ["A!", None]


def test_empty_batch() -> None:
    assert derive("a + 1", "integer", ROWS.slice(0, 0)) == []


def test_type_mismatches_are_spec_errors_before_anything_runs() -> None:
    spec = {
        "name": "w", "source": {"kind": "csv", "path": "in.csv"}, "sink": {"dataset": "d"},
        "schema": {"fields": {"name": {}, "n": {"type": "integer"}, "when": {"type": "date"}}},
        "steps": [{"use": "derive", "params": {"column": "a", "expression": "name + n"}},
                  {"use": "derive", "params": {"column": "b", "expression": "len(name) + n", "type": "integer"}},
                  {"use": "derive", "params": {"column": "c", "expression": "b > when"}},
                  {"use": "derive", "params": {"column": "d", "expression": "upper(a)"}}],
    }
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    assert caught.value.errors == [
        "steps[0].params.expression: + needs two numbers or two strings, got string and int64",
        "steps[2].params.expression: > does not apply to int64 and date32[day]",
    ]
