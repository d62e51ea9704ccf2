"""The expression language of `derive`: Python syntax, parsed and checked, never eval'd.

`parse_expression` accepts only a whitelist of nodes (columns, literals, arithmetic, comparisons,
and/or/not, x if c else y, a few functions) and says what it rejected; `evaluate` walks the tree
over whole Arrow columns, so a batch costs one kernel call per node.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from functools import reduce
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.augmenters.base import map_distinct
from pipelines.spec.base import IDENTIFIER

Value: TypeAlias = "pa.Array | pa.Scalar"  # a column of the batch, or a literal broadcast by Arrow

_STRING_KERNELS = {"lower": "utf8_lower", "upper": "utf8_upper", "strip": "utf8_trim_whitespace", "len": "utf8_length"}
_MATCH_KERNELS = {"contains": "match_substring", "starts_with": "starts_with", "ends_with": "ends_with"}
_CONVERSIONS = {"to_string": pa.string(), "to_integer": pa.int64(), "to_float": pa.float64()}
# name -> (fewest, most) arguments; None: any number
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    **dict.fromkeys([*_STRING_KERNELS, *_CONVERSIONS, "abs", "is_null"], (1, 1)),
    **dict.fromkeys(_MATCH_KERNELS, (2, 2)), "concat": (1, None), "coalesce": (1, None), "round": (1, 2),
}
_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}
_COMPARE = {ast.Eq: ("equal", "=="), ast.NotEq: ("not_equal", "!="), ast.Lt: ("less", "<"),
            ast.LtE: ("less_equal", "<="), ast.Gt: ("greater", ">"), ast.GtE: ("greater_equal", ">=")}
_UNARY = {ast.USub: "-", ast.UAdd: "+", ast.Not: "not"}
_LITERALS = (str, int, float, bool, type(None))
_REJECTED = {
    ast.Attribute: "attribute access (x.y) is not allowed", ast.Subscript: "subscripts (x[i]) are not allowed",
    ast.Lambda: "lambda is not allowed", ast.JoinedStr: "f-strings are not allowed (use concat)",
    ast.NamedExpr: "assignment (:=) is not allowed", ast.Starred: "* arguments are not allowed",
    **dict.fromkeys([ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp], "comprehensions are not allowed"),
    **dict.fromkeys([ast.List, ast.Tuple, ast.Set, ast.Dict], "lists, tuples, sets and dicts are not allowed"),
}
MAX_DEPTH = 100


def parse_expression(text: str) -> ast.Expression:
    """The checked syntax tree; ValueError says what is not allowed and lists what is."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        where = f" at character {exc.offset}" if exc.offset else ""
        raise ValueError(f"invalid expression: {exc.msg}{where}") from None
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:  # iterative: a deep expression must not exhaust the stack here
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"expression is nested more than {MAX_DEPTH} levels deep")
        _check(node)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return tree


def _check(node: ast.AST) -> None:
    if isinstance(node, (ast.Expression, ast.IfExp, ast.BoolOp, ast.operator, ast.boolop, ast.cmpop,
                         ast.unaryop, ast.expr_context)):
        return  # the operator nodes are checked through their parents
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, _LITERALS) or (type(node.value) is int and not -(2**63) <= node.value < 2**63):
            raise ValueError(f"literal {node.value!r} is not allowed (strings, 64-bit integers, floats, bools, None)")
    elif isinstance(node, ast.Name):
        if not re.match(IDENTIFIER, node.id):
            raise ValueError(f"name {node.id!r} is not allowed: column names start with a letter")
    elif isinstance(node, ast.BinOp | ast.UnaryOp):
        table = _BINARY if isinstance(node, ast.BinOp) else _UNARY
        if type(node.op) not in table:
            raise ValueError(f"operator {type(node.op).__name__} is not allowed (allowed: {' '.join(table.values())})")
    elif isinstance(node, ast.Compare):
        if any(type(op) not in _COMPARE for op in node.ops):
            raise ValueError("only == != < <= > >= compare (use is_null(x) for 'is None', contains(s, 'x') for 'in')")
        if any(isinstance(c, ast.Constant) and c.value is None for c in node.comparators + [node.left]):
            raise ValueError("comparing with None is always null: use is_null(x)")
    elif isinstance(node, ast.Call):
        _check_call(node)
    else:
        raise ValueError(_REJECTED.get(type(node), f"{type(node).__name__} is not allowed in expressions"))


def _check_call(node: ast.Call) -> None:
    name = node.func.id if isinstance(node.func, ast.Name) else None
    if name not in FUNCTIONS:
        shown = name or ast.unparse(node.func)
        raise ValueError(f"function {shown!r} is not allowed (allowed: {', '.join(sorted(FUNCTIONS))})")
    if node.keywords:
        raise ValueError(f"{name}() takes no keyword arguments")
    low, high = FUNCTIONS[name]
    if len(node.args) < low or (high is not None and len(node.args) > high):
        wanted = str(low) if low == high else f"{low} or more" if high is None else f"{low} to {high}"
        raise ValueError(f"{name}() takes {wanted} argument(s), got {len(node.args)}")
    literal = node.args[1:2]
    if name in ("contains", "starts_with", "ends_with") and not _literal(literal, str):
        raise ValueError(f"{name}()'s second argument must be a string literal")
    if name == "round" and literal and not _literal(literal, int):
        raise ValueError("round()'s second argument must be an integer literal")


def _literal(args: list[ast.expr], kind: type) -> bool:
    node = args[0] if args else None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and kind is int:
        node = node.operand  # round(x, -2)
    return isinstance(node, ast.Constant) and type(node.value) is kind


def column_names(tree: ast.Expression) -> list[str]:
    """The columns an expression reads, in order of appearance (function names are not columns)."""
    functions = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    names = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in functions]
    return list(dict.fromkeys(n.id for n in sorted(names, key=lambda n: (n.lineno, n.col_offset))))


class ExpressionError(TypeError):
    """The expression does not fit the column types (e.g. a string plus a number)."""


def evaluate(tree: ast.Expression, columns: dict[str, pa.Array], rows: int) -> Value:
    """The expression's value for every row: an array, or a scalar when it reads no column."""
    columns = {n: c.cast(pa.string()) if pa.types.is_large_string(c.type) else c for n, c in columns.items()}
    return _Evaluator(columns, rows).eval(tree.body)


class _Evaluator:
    """Walks a checked tree; every node becomes a whole column (or a literal Arrow broadcasts)."""

    def __init__(self, columns: dict[str, pa.Array], rows: int) -> None:
        self.columns = columns
        self.rows = rows

    def eval(self, node: ast.expr) -> Value:
        match node:
            case ast.Constant(value=value):
                return pa.scalar(value)
            case ast.Name(id=name):
                return self.columns[name]
            case ast.BinOp(op=op, left=left, right=right):
                return self.binary(type(op), *_unify(self.eval(left), self.eval(right)))
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return pc.invert(_boolean(self.eval(operand), "not"))
            case ast.UnaryOp(op=op, operand=operand):
                value = _numeric(self.eval(operand), _UNARY[type(op)])
                return self.checked("negate", lambda x: -x, value) if isinstance(op, ast.USub) else value
            case ast.BoolOp(op=op, values=values):
                kernel, symbol = ("and_kleene", "and") if isinstance(op, ast.And) else ("or_kleene", "or")
                return reduce(getattr(pc, kernel), [_boolean(self.eval(v), symbol) for v in values])
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                values = [self.eval(left), *map(self.eval, comparators)]
                tests = [_call(*_COMPARE[type(op)], *_unify(a, b)) for op, a, b in zip(ops, values, values[1:])]
                return reduce(pc.and_kleene, tests)
            case ast.IfExp(test=test, body=body, orelse=orelse):
                condition = _boolean(self.eval(test), "the condition of x if c else y")
                return pc.if_else(condition, *_same_type("x if c else y", self.eval(body), self.eval(orelse)))
            case ast.Call(func=ast.Name(id=name), args=args):
                return self.call(name, [self.eval(a) for a in args])
        raise AssertionError(f"unchecked node {ast.dump(node)}")  # parse_expression let it through

    def binary(self, op: type[ast.operator], a: Value, b: Value) -> Value:
        if op is ast.Add and pa.types.is_string(a.type) and pa.types.is_string(b.type):
            return pc.binary_join_element_wise(a, b, "")
        if not (_is_number(a) and _is_number(b)):
            wanted = "two numbers or two strings" if op is ast.Add else "numbers"
            raise ExpressionError(f"{_BINARY[op]} needs {wanted}, got {a.type} and {b.type}")
        a, b = _numeric(a, _BINARY[op]), _numeric(b, _BINARY[op])
        if op in (ast.Div, ast.FloorDiv, ast.Mod):
            b = pc.if_else(pc.equal(b, 0), pa.scalar(None, b.type), b)  # x / 0 is null, not inf or an error
        integers = pa.types.is_integer(a.type) and pa.types.is_integer(b.type)
        if op is ast.Div:
            return pc.divide(_float(a), _float(b))
        if op is ast.Mod:
            return pc.modulo(a, b)  # Python's sign rule: -7 % 3 == 2
        if op is ast.FloorDiv:
            return pc.divide(pc.subtract(a, pc.modulo(a, b)), b) if integers else pc.floor(pc.divide(a, b))
        if op is ast.Pow:
            if integers:
                try:
                    return pc.power_checked(a, b)
                except pa.ArrowInvalid:  # a negative exponent or overflow: compute in floats
                    pass
            return pc.power(_float(a), _float(b))
        kernel, fn = {ast.Add: ("add", int.__add__), ast.Sub: ("subtract", int.__sub__),
                      ast.Mult: ("multiply", int.__mul__)}[op]
        return self.checked(kernel, fn, a, b)

    def checked(self, kernel: str, fn: Callable[..., Any], *args: Value) -> Value:
        """The kernel that reports overflow; rows that overflow become null, the rest are kept."""
        try:
            return pc.call_function(f"{kernel}_checked", list(args))
        except pa.ArrowInvalid:
            columns = [a.to_pylist() if isinstance(a, pa.Array) else [a.as_py()] * self.rows for a in args]
            results = [None if None in row else fn(*row) for row in zip(*columns)]
            return pa.array([r if r is None or -2**63 <= r < 2**63 else None for r in results], pa.int64())

    def call(self, name: str, args: list[Value]) -> Value:
        x = args[0]
        if name in _STRING_KERNELS:
            result = _call(_STRING_KERNELS[name], f"{name}()", x)
            return result.cast(pa.int64()) if name == "len" else result
        if name in _MATCH_KERNELS:  # the second argument is a string literal (checked)
            return _call(_MATCH_KERNELS[name], f"{name}()", x, options=pc.MatchSubstringOptions(args[1].as_py()))
        if name in _CONVERSIONS:
            return convert(x, _CONVERSIONS[name])
        if name == "concat":  # nulls as empty strings, unlike +
            return pc.binary_join_element_wise(*[pc.fill_null(convert(a, pa.string()), "") for a in args], "")
        if name == "coalesce":
            return pc.coalesce(*_same_type("coalesce()", *args))
        if name == "round":  # Python's rounding: half to even
            digits = args[1].as_py() if len(args) > 1 else 0
            if pa.types.is_integer(x.type) and digits >= 0:
                return x
            return _call("round", "round()", x, options=pc.RoundOptions(digits, "half_to_even"))
        if name == "abs":
            return self.checked("abs", abs, _numeric(x, "abs()"))
        return pc.is_null(x, nan_is_null=True)  # is_null: the last one left


def _call(kernel: str, symbol: str, *args: Value, options: pc.FunctionOptions | None = None) -> Value:
    try:
        return pc.call_function(kernel, list(args), options)
    except pa.ArrowNotImplementedError:
        raise ExpressionError(f"{symbol} does not apply to {' and '.join(str(a.type) for a in args)}") from None


def _unify(*values: Value) -> list[Value]:
    """One type where the values allow it: untyped nulls (None) take the others' type, numbers
    become int64, or float64 when any is a float."""
    types = {v.type for v in values if not pa.types.is_null(v.type)}
    if types and all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types):
        target = pa.float64() if any(pa.types.is_floating(t) for t in types) else pa.int64()
    elif len(types) == 1:
        target = types.pop()
    else:
        return list(values)  # mixed types: the caller reports them
    return [v if v.type == target else _float(v) if target == pa.float64() else v.cast(target) for v in values]


def _same_type(symbol: str, *values: Value) -> list[Value]:
    unified = _unify(*values)
    if len({v.type for v in unified}) > 1:
        raise ExpressionError(f"{symbol} needs values of one type, got {' and '.join(str(v.type) for v in unified)}")
    return unified


def _float(value: Value) -> Value:
    return pc.cast(value, pa.float64(), safe=False)  # 2**62 has no exact float: round, as Python does


def _is_number(value: Value) -> bool:
    return pa.types.is_integer(value.type) or pa.types.is_floating(value.type) or pa.types.is_null(value.type)


def _numeric(value: Value, symbol: str) -> Value:
    if not _is_number(value):
        raise ExpressionError(f"{symbol} needs numbers, got {value.type}")
    return value.cast(pa.int64()) if pa.types.is_null(value.type) else value


def _boolean(value: Value, symbol: str) -> Value:
    if pa.types.is_null(value.type):
        return value.cast(pa.bool_())
    if not pa.types.is_boolean(value.type):
        raise ExpressionError(f"{symbol} needs booleans, got {value.type}")
    return value


_BOOLEAN_WORDS = {"true": True, "t": True, "yes": True, "y": True, "1": True,
                  "false": False, "f": False, "no": False, "n": False, "0": False}


def _python_int(value: Any) -> int | None:
    number = int(float(value)) if isinstance(value, str) and not value.lstrip("+-").isdigit() else int(value)
    return number if -2**63 <= number < 2**63 else None


_PYTHON: dict[pa.DataType, Callable[[Any], Any]] = {
    pa.int64(): _python_int, pa.float64(): float, pa.string(): str,
    pa.bool_(): lambda v: _BOOLEAN_WORDS.get(str(v).lower()),
}


def convert(value: Value, target: pa.DataType) -> Value:
    """value as `target`; a value that does not convert is null (to_integer("x") -> null)."""
    if value.type == target:
        return value
    if pa.types.is_string(value.type):
        value = pc.utf8_trim_whitespace(value)
        if pa.types.is_boolean(target):  # Arrow reads only true/false/1/0
            return _each(_PYTHON[target], value, target)
    elif pa.types.is_floating(value.type) and pa.types.is_integer(target):
        value = pc.trunc(value)  # 2.7 -> 2, as int() does
    try:
        return value.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _each(_PYTHON[target], value, target)


def _each(fn: Callable[[Any], Any], value: Value, target: pa.DataType) -> Value:
    """fn per distinct value, None where it fails: the slow path, for what Arrow cannot cast."""

    def attempt(v: Any) -> Any:
        try:
            return fn(v)
        except (ValueError, TypeError, OverflowError):
            return None

    if isinstance(value, pa.Scalar):
        return pa.scalar(None if value.as_py() is None else attempt(value.as_py()), target)
    return pa.array(map_distinct(value.to_pylist(), attempt), type=target)
