"""Arrow compute building blocks of validation's columnar path (`validation.validate_table`).

Each helper answers only where its answer provably equals what the per-record Python code
(`validation.coerce`, `check_constraints`, `record_uuid`) gives; everything else is left to that
code. The rules they lean on:

- `str.strip()` strips the characters for which `str.isspace()` is true. A value whose first and
  last characters are none of them is left as it is; an ASCII value is stripped of the ASCII ones.
- RE2 (Arrow's regex engine) and Python `re` disagree on Unicode classes, some syntax and `$`.
  A pattern is handed to RE2 only as a translation of Python's own parse of it, in a small subset
  whose meaning on ASCII-only values is the same in both, and only for ASCII-only values.
- Dates and times are read from fixed-width digits and checked by calendar arithmetic (numpy).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.augmenters.re2 import re2_class

ASCII_WHITESPACE = "".join(chr(c) for c in range(128) if chr(c).isspace())
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


# bookkeeping -------------------------------------------------------------------------------------
def mask(values: pa.Array) -> np.ndarray:
    """A boolean Arrow array as numpy, null as False."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def with_validity(values: pa.Array, valid: np.ndarray) -> pa.Array:
    """`values` where `valid` (and not null), null elsewhere; sharing the value buffers."""
    keep = valid & mask(values.is_valid())
    if values.offset != 0 or pa.types.is_nested(values.type) or pa.types.is_dictionary(values.type):
        return pc.if_else(pa.array(keep), values, pa.scalar(None, values.type))
    bitmap = pa.py_buffer(np.packbits(keep, bitorder="little").tobytes())
    return pa.Array.from_buffers(values.type, len(values), [bitmap, *values.buffers()[1:]])


class Gather:
    """Builds a column from pieces: a base array, then values put at given rows (last put wins)."""

    def __init__(self, base: pa.Array, rows: int, everywhere: bool = False) -> None:
        # `everywhere`: base is one value taken for every row; otherwise row i is base[i].
        self.pieces: list[pa.Array] = [base]
        self.size = len(base)
        self.index = np.zeros(rows, dtype=np.int64) if everywhere else np.arange(rows, dtype=np.int64)

    def put(self, rows: np.ndarray, values: pa.Array) -> None:
        if len(rows) == 0:
            return
        self.pieces.append(values)
        self.index[rows] = self.size + np.arange(len(rows), dtype=np.int64)
        self.size += len(values)

    def take(self, rows: np.ndarray | None = None) -> pa.Array:
        index = self.index if rows is None else self.index[rows]
        whole = self.pieces[0] if len(self.pieces) == 1 else pa.concat_arrays(self.pieces)
        return whole.take(pa.array(index, pa.int64()))


# whitespace -----------------------------------------------------------------------------------------
@functools.cache
def python_whitespace() -> pa.Array:
    """Every character `str.strip()` removes, from this Python's own Unicode tables: the gaps
    `str.split()` (the same whitespace test) leaves in the text of all code points in order."""
    every = np.arange(0x110000, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
    runs = every.split()
    gaps = [(0, ord(runs[0][0]))]
    gaps += [(ord(before[-1]) + 1, ord(after[0])) for before, after in zip(runs, runs[1:])]
    gaps.append((ord(runs[-1][-1]) + 1, 0x110000))
    return pa.array([chr(c) for start, stop in gaps for c in range(start, stop)], pa.string())


def strip(column: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(values as `str.strip()` gives them where trusted, trusted, ASCII-only) of a string array."""
    spaces = python_whitespace()
    first = pc.utf8_slice_codeunits(column, 0, 1)
    last = pc.utf8_slice_codeunits(column, -1)
    ends = mask(pc.or_(pc.is_in(first, value_set=spaces), pc.is_in(last, value_set=spaces)))
    ascii_only = mask(pc.string_is_ascii(column))
    if not ends.any():
        return column, np.ones(len(column), dtype=bool), ascii_only
    stripped = pc.if_else(pa.array(ends), pc.utf8_trim(column, ASCII_WHITESPACE), column)
    return stripped, ~ends | ascii_only, ascii_only


# regular expressions -----------------------------------------------------------------------------------
_CATEGORY_ESCAPES = {
    "CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S", "CATEGORY_WORD": r"\w", "CATEGORY_NOT_WORD": r"\W",
}
_AT = {
    "AT_BEGINNING": r"\A", "AT_BEGINNING_STRING": r"\A",
    # `$` also matches before a final newline; a stripped value never ends with one.
    "AT_END": r"\z", "AT_END_STRING": r"\z",
    "AT_BOUNDARY": r"\b", "AT_NON_BOUNDARY": r"\B",  # word characters of ASCII text agree
}
_ALL_ASCII = frozenset(range(128))


@functools.cache
def _category(name: str, ascii_flag: bool) -> frozenset[int] | None:
    """The ASCII characters Python's class matches, asked of Python itself."""
    escape = _CATEGORY_ESCAPES.get(name)
    if escape is None:
        return None
    pattern = re.compile(("(?a)" if ascii_flag else "") + escape)
    return frozenset(c for c in range(128) if pattern.fullmatch(chr(c)))


class _Untranslatable(Exception):
    pass


class _Translator:
    def __init__(self, ascii_flag: bool, dotall: bool, max_repeat: int) -> None:
        self.ascii_flag, self.dotall, self.max_repeat = ascii_flag, dotall, max_repeat

    def sequence(self, items: Sequence[tuple[Any, Any]]) -> str:
        return "".join(self.item(str(op), av) for op, av in items)

    def item(self, op: str, av: Any) -> str:
        if op == "LITERAL":
            return f"\\x{{{av:x}}}"  # a non-ASCII literal never matches ASCII text, in either engine
        if op in ("NOT_LITERAL", "ANY", "IN"):
            return self.charset(op, av)
        if op in ("MAX_REPEAT", "MIN_REPEAT"):  # laziness does not change whether a full match exists
            low, high, sub = av
            unbounded = high == self.max_repeat
            if low > 1000 or (not unbounded and high > 1000):
                raise _Untranslatable
            return f"(?:{self.sequence(sub)}){{{low},{'' if unbounded else high}}}"
        if op == "SUBPATTERN":
            _group, add_flags, del_flags, sub = av
            if add_flags or del_flags:
                raise _Untranslatable
            return f"(?:{self.sequence(sub)})"
        if op == "BRANCH":
            return "(?:" + "|".join(self.sequence(alt) for alt in av[1]) + ")"
        if op == "AT" and str(av) in _AT:
            return _AT[str(av)]
        raise _Untranslatable  # lookarounds, back-references, atomic groups, possessive repeats...

    def charset(self, op: str, av: Any) -> str:
        if op == "NOT_LITERAL":
            members = set(_ALL_ASCII - {av})
        elif op == "ANY":
            members = set(_ALL_ASCII if self.dotall else _ALL_ASCII - {10})
        else:
            members, negate = set(), False
            for item_op, item_av in av:
                kind = str(item_op)
                if kind == "NEGATE":
                    negate = True
                elif kind == "LITERAL":
                    members |= {item_av} & _ALL_ASCII
                elif kind == "RANGE":
                    members |= set(range(item_av[0], min(item_av[1], 127) + 1))
                elif kind == "CATEGORY":
                    category = _category(str(item_av), self.ascii_flag)
                    if category is None:
                        raise _Untranslatable
                    members |= category
                else:
                    raise _Untranslatable
            if negate:
                members = set(_ALL_ASCII - members)
        if not members:
            raise _Untranslatable
        return re2_class(members)


@functools.cache
def re2_fullmatch(pattern: str) -> str | None:
    """An RE2 pattern that, on ASCII-only text, matches exactly what `re.fullmatch(pattern, text)`
    matches on stripped text; None when the pattern is outside the subset both engines agree on."""
    try:
        parser = importlib.import_module("re._parser")
        constants = importlib.import_module("re._constants")
        parsed = parser.parse(pattern)
        flags = parsed.state.flags
        allowed = constants.SRE_FLAG_UNICODE | constants.SRE_FLAG_ASCII | constants.SRE_FLAG_VERBOSE
        allowed |= constants.SRE_FLAG_DOTALL
        if flags & ~allowed:  # IGNORECASE, MULTILINE, LOCALE...
            return None
        translator = _Translator(
            bool(flags & constants.SRE_FLAG_ASCII), bool(flags & constants.SRE_FLAG_DOTALL), constants.MAXREPEAT
        )
        translated = r"\A(?:" + translator.sequence(list(parsed)) + r")\z"
        pc.match_substring_regex(pa.array(["", "a"], pa.string()), translated)  # RE2 compiles it
    except Exception:  # noqa: BLE001 - any doubt leaves the pattern to Python
        return None
    return translated


# numbers ----------------------------------------------------------------------------------------------
def integer_bounds(low: float | None, high: float | None) -> tuple[int | None, int | None] | None:
    """(lowest, highest) int64 value that meets min/max, exactly; None for no bound. None in all
    when a bound is not finite or leaves no int64 value (then Python judges every value)."""
    lowest: int | None = None
    highest: int | None = None
    if low is not None:
        if not math.isfinite(low):
            return None
        lowest = math.ceil(low)  # an int is < 2.5 exactly when it is < 3: floats are rationals
        if lowest > INT64_MAX:
            return None
        lowest = None if lowest <= INT64_MIN else lowest
    if high is not None:
        if not math.isfinite(high):
            return None
        highest = math.floor(high)
        if highest < INT64_MIN:
            return None
        highest = None if highest >= INT64_MAX else highest
    return lowest, highest


def integer_enum(members: list[str | int | float]) -> pa.Array:
    """The int64 values equal (as Python compares) to some member."""
    values = set()
    for m in members:
        if isinstance(m, int) or (isinstance(m, float) and math.isfinite(m) and m.is_integer()):
            number = int(m)
            if INT64_MIN <= number <= INT64_MAX:
                values.add(number)
    return pa.array(sorted(values), pa.int64())


def float_enum(members: list[str | int | float]) -> pa.Array:
    """The float64 values equal (as Python compares) to some member; both zeros for 0."""
    values: set[float] = set()
    for m in members:
        if isinstance(m, str):
            continue
        try:
            number = float(m)
        except OverflowError:
            continue
        if number == m and not math.isnan(number):  # an int without an exact float equals none
            values.add(number)
    ordered = sorted(values)
    if 0.0 in values:  # Arrow's is_in tells -0.0 from 0.0; Python's == does not
        ordered += [0.0, -0.0]
    return pa.array(ordered, pa.float64())


# dates ---------------------------------------------------------------------------------------------------
EPOCH_DAYS_1 = (dt.date(1, 1, 1) - dt.date(1970, 1, 1)).days
EPOCH_DAYS_9999 = (dt.date(9999, 12, 31) - dt.date(1970, 1, 1)).days
MIN_MICROS = EPOCH_DAYS_1 * 86_400_000_000
MAX_MICROS = (EPOCH_DAYS_9999 + 1) * 86_400_000_000 - 1


def valid_date(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Which (year, month, day) are dates Python accepts (years 1 to 9999)."""
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    lengths = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
    month_ok = (month >= 1) & (month <= 12)
    longest = lengths[np.where(month_ok, month, 0)] + (leap & (month == 2))
    return (year >= 1) & (year <= 9999) & month_ok & (day >= 1) & (day <= longest)


def epoch_days(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of valid proleptic Gregorian dates (H. Hinnant's days_from_civil)."""
    y = year - (month <= 2)
    era = y // 400
    year_of_era = y - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def digits(values: pa.Array, fill: int = 0) -> np.ndarray:
    """Strings of ASCII digits ("" as 0) as int64, null as `fill`."""
    numbers = pc.cast(pc.utf8_lpad(values, 1, "0"), pa.int64())
    return np.asarray(pc.fill_null(numbers, fill).to_numpy(zero_copy_only=False), dtype=np.int64)


# record ids ---------------------------------------------------------------------------------------------
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_POSITIONS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def uuid5_strings(namespace: bytes, names: list[bytes]) -> pa.Array:
    """`str(uuid.uuid5(namespace, name))` of each UTF-8 name, as a string array."""
    rows = len(names)
    if rows == 0:
        return pa.array([], pa.string())
    digests = b"".join([hashlib.sha1(namespace + name).digest() for name in names])
    raw = np.frombuffer(digests, dtype=np.uint8).reshape(rows, 20)[:, :16].copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x50  # version 5
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    text = np.empty((rows, 36), dtype=np.uint8)
    text[:, [8, 13, 18, 23]] = ord("-")
    nibbles = np.empty((rows, 32), dtype=np.uint8)
    nibbles[:, 0::2] = _HEX[raw >> 4]
    nibbles[:, 1::2] = _HEX[raw & 0x0F]
    text[:, _HEX_POSITIONS] = nibbles
    offsets = np.arange(0, 36 * (rows + 1), 36, dtype=np.int32)
    return pa.StringArray.from_buffers(rows, pa.py_buffer(offsets.tobytes()), pa.py_buffer(text.tobytes()))


_HEX_VALUE = np.full(256, 16, dtype=np.uint8)  # 16: not a lower-case hex digit
_HEX_VALUE[_HEX] = np.arange(16, dtype=np.uint8)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def id_hashes(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash (uint64) of each id, equal for equal ids. Record ids are UUID strings (what
    `uuid5_strings` writes): their 16 bytes are read back from the hex digits in the Arrow buffer
    with numpy and folded to 64 bits, several times faster than pandas' hash_array over Python
    strings, which hashes any other ids (nulls, other widths, upper case)."""
    array = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    rows = len(array)
    if rows and pa.types.is_string(array.type) and array.null_count == 0:
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset : array.offset + rows + 1]
        if offsets[-1] - offsets[0] == 36 * rows and (np.diff(offsets) == 36).all():
            text = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]].reshape(rows, 36)
            nibbles = _HEX_VALUE[text[:, _HEX_POSITIONS]]
            if (nibbles < 16).all() and (text[:, [8, 13, 18, 23]] == ord("-")).all():
                halves = np.ascontiguousarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).view(np.uint64)
                return halves[:, 0] ^ (halves[:, 1] * _GOLDEN)
    return np.asarray(pd.util.hash_array(array.to_numpy(zero_copy_only=False)), dtype=np.uint64)


def json_strings(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(JSON text of each string as `json.dumps(ensure_ascii=False)` writes it, null as "null";
    which values hold a control character and so need json.dumps itself)."""
    control = mask(pc.match_substring_regex(values, r"[\x00-\x1f]"))
    escaped = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    quoted = pc.binary_join_element_wise('"', escaped, '"', "")
    return pc.fill_null(quoted, "null"), control
