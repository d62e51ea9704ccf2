"""The augmenter base class: subclasses implement one hook, the base owns the rest."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from functools import cache
from typing import Any, ClassVar, TypeAlias

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError

from pipelines.inference.context import RunContext

# What a step returns for each added column: values, a pandas Series, or (from `process_arrow`) Arrow.
Produced: TypeAlias = "Sequence[Any] | pd.Series | pa.Array | pa.ChunkedArray"


class AugmenterParams(BaseModel):
    """Base of every augmenter's params: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class NestedParamsError(Exception):
    """Params of a step inside a step (a waterfall's candidate) that do not validate; `loc` is
    where they sit within the outer step's params, so errors name their real path."""

    def __init__(self, loc: tuple[Any, ...], error: ValidationError) -> None:
        super().__init__(str(error))
        self.loc = loc
        self.error = error


class Augmenter(ABC):
    """One step of a workflow. Reads some columns and adds others, batch by batch.

    Subclasses declare `Params`, `reads()` and `adds()`, and implement `process_batch`. The base
    checks the declared columns, converts the batch, casts the outputs to the declared Arrow
    types and refuses to overwrite a column unless the spec says so.
    """

    name: ClassVar[str]
    Params: ClassVar[type[AugmenterParams]]
    path_params: ClassVar[tuple[str, ...]] = ()  # params holding file paths, resolved at load
    string_inputs: ClassVar[bool] = True  # every column read must be a string column

    def __init__(self, params: AugmenterParams, step_name: str, overwrite: bool = False) -> None:
        self.params = params
        self.step_name = step_name
        self.overwrite = overwrite

    @abstractmethod
    def reads(self) -> list[tuple[str, str]]:
        """(param name, column) for each column this step reads."""

    @abstractmethod
    def adds(self) -> dict[str, pa.DataType]:
        """The columns this step adds, with their Arrow types."""

    def type_errors(self, columns: dict[str, pa.DataType]) -> list[tuple[str, str]]:
        """(param, reason) for each input this step cannot take, given the declared types of the
        columns it reads: checked with the spec, before any record is read. None by default."""
        return []

    @classmethod
    def provider_names(cls, params: Mapping[str, Any]) -> list[str]:
        """The providers a step with these (raw) params calls; none by default."""
        return []

    def provider_errors(self, providers: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(param, reason) for each provider this step names that is missing or unfit."""
        return []

    def secret_names(self, providers: Mapping[str, Any]) -> list[str]:
        """Environment variables (keys, tokens) this step's calls read; none by default."""
        return []

    def status_column(self) -> str | None:
        """The column saying how each record fared ('ok', 'error', 'skipped'), for steps that
        can fail per record; None for steps that cannot."""
        return None

    def value_columns(self) -> list[str]:
        """The added columns that hold values (what people review), not bookkeeping; all by default."""
        return list(self.adds())

    def bind(self, context: RunContext) -> None:
        """Receive the run's context (providers, budget, cache) before setup; no-op by default."""

    def setup(self) -> None:
        """Load heavy state (reference tables, clients) once per worker; no-op by default."""

    @abstractmethod
    def process_batch(self, batch: pd.DataFrame) -> Mapping[str, Sequence[Any] | pd.Series]:
        """Return the added columns for the batch (only the columns from `reads()` are in it)."""

    def process_arrow(self, batch: pa.Table) -> Mapping[str, Produced] | None:
        """What `process_batch` returns for this batch, computed straight from Arrow: an internal
        fast path of built-in steps, which must give exactly the same values (a DataFrame per step
        is most of the cost of a request's one record). `batch` holds the columns from `reads()`.
        None (the default): no fast path for these columns, and `process_batch` runs. A subclass
        that overrides `process_batch` below the class giving `process_arrow` always gets its own
        `process_batch` run."""
        return None

    def process_values(
        self, columns: Mapping[str, list[Any]], types: Mapping[str, pa.DataType]
    ) -> Mapping[str, Produced] | None:
        """What `process_arrow` returns for a few records held as Python lists (the columns from
        `reads()` and their Arrow types), computed without Arrow: the in-process engine's row path
        (engine/rows.py). None (the default): no such path, and the records go the Arrow way. Taken
        only where it is defined at or below the class giving the `process_arrow` the step runs."""
        return None

    def compute_values(self, columns: Mapping[str, list[Any]], types: Mapping[str, pa.DataType],
                       rows: int) -> dict[str, list[Any]]:
        """`compute` and `attach` on `rows` records held as Python lists: the added columns as the
        Python values the attached Arrow columns would give back, checked as `attach` checks them."""
        reads = list(dict.fromkeys(column for _, column in self.reads()))
        missing = [c for c in reads if c not in columns]
        if missing:
            raise KeyError(f"step {self.step_name!r} reads missing column(s) {missing}")
        produced = (self.process_values({c: columns[c] for c in reads}, {c: types[c] for c in reads})
                    if _values_path(type(self)) else None)
        declared = self.adds()
        if produced is None:
            # pa.table({}) has no rows: a step reading no column still gets `rows` records.
            batch = pa.table({c: pa.array(columns[c], types[c]) for c in reads}) if reads else \
                pa.table({"_": pa.nulls(rows)}).select([])
            produced = self.compute(batch)
        elif set(produced) != set(declared):
            raise RuntimeError(f"step {self.step_name!r} produced {sorted(produced)}, declared {sorted(declared)}")
        out: dict[str, list[Any]] = {}
        for column, arrow_type in declared.items():
            values = python_values(produced[column], arrow_type)
            if len(values) != rows:
                raise RuntimeError(f"step {self.step_name!r} returned {len(values)} values for {rows} rows")
            if column in columns and not self.overwrite:
                raise RuntimeError(f"step {self.step_name!r} would overwrite {column!r}")
            out[column] = values
        return out

    def apply(self, table: pa.Table) -> pa.Table:
        """Run the step on an Arrow batch and return it with the added columns."""
        return self.attach(table, self.compute(table))

    def compute(self, table: pa.Table) -> Mapping[str, Produced]:
        """The added columns for the batch, checked against what the step declares."""
        columns = list(dict.fromkeys(column for _, column in self.reads()))
        present = set(table.column_names)  # a list built anew on every call of column_names
        missing = [c for c in columns if c not in present]
        if missing:
            raise KeyError(f"step {self.step_name!r} reads missing column(s) {missing}")
        batch = table.select(columns)
        produced = self.process_arrow(batch) if _arrow_path(type(self)) else None
        if produced is None:
            produced = self.process_batch(batch.to_pandas(types_mapper=pd.ArrowDtype))
        declared = self.adds()
        if set(produced) != set(declared):
            raise RuntimeError(
                f"step {self.step_name!r} produced {sorted(produced)}, declared {sorted(declared)}"
            )
        return produced

    def attach(self, table: pa.Table, produced: Mapping[str, Produced]) -> pa.Table:
        """The batch with the produced columns added as their declared Arrow types; an existing
        column is replaced only when the spec says overwrite."""
        names = table.column_names
        for column, arrow_type in self.adds().items():
            values = to_arrow(produced[column], arrow_type)
            if len(values) != table.num_rows:
                raise RuntimeError(f"step {self.step_name!r} returned {len(values)} values for {table.num_rows} rows")
            if column in names:
                if not self.overwrite:
                    raise RuntimeError(f"step {self.step_name!r} would overwrite {column!r}")
                table = table.set_column(names.index(column), column, values)
            else:
                table = table.append_column(pa.field(column, arrow_type), values)
                names.append(column)
        return table


@cache
def _arrow_path(cls: type[Augmenter]) -> bool:
    """Whether `compute` may try the class's `process_arrow`: it is defined below `Augmenter`,
    at or below the class whose `process_batch` the class runs."""
    arrow = _owner(cls, "process_arrow")
    return arrow < cls.__mro__.index(Augmenter) and arrow <= _owner(cls, "process_batch")


@cache
def _values_path(cls: type[Augmenter]) -> bool:
    """Whether `compute_values` may try the class's `process_values`: it is defined below
    `Augmenter`, at or below the class giving the `process_arrow` the class runs."""
    values = _owner(cls, "process_values")
    return _arrow_path(cls) and values < cls.__mro__.index(Augmenter) and values <= _owner(cls, "process_arrow")


def _owner(cls: type[Augmenter], method: str) -> int:
    """Where in the class's MRO `method` is defined (0: the class itself)."""
    return next(i for i, klass in enumerate(cls.__mro__) if method in vars(klass))


PLAIN_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_floating,
               pa.types.is_boolean, pa.types.is_date, pa.types.is_timestamp)


def plain(arrow_type: pa.DataType) -> bool:
    """Whether a column of this type is the same Arrow data after a trip through a DataFrame of
    `pd.ArrowDtype` (what `process_batch` gets): the types `process_arrow` paths take."""
    return any(test(arrow_type) for test in PLAIN_TYPES)


def string_values(column: pa.ChunkedArray | pa.Array) -> list[str | None] | None:
    """A string column as Python values (what `values_of` gives of its Series), or None for a
    column of another type (left to `process_batch`)."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.to_pylist()
    return None


def to_arrow(values: Produced, arrow_type: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """Values as an Arrow array of exactly this type; None, NaN and NA become null."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values if values.type == arrow_type else values.cast(arrow_type)
    if isinstance(values, pd.Series):
        array = pa.Array.from_pandas(values)
        return array if array.type == arrow_type else array.cast(arrow_type)
    return pa.array(list(values), type=arrow_type, from_pandas=True)


# Python values that an Arrow column of the type gives back unchanged (a str, an int in range, a
# float, a bool); other types (dates, timestamps, ...) make the trip through Arrow.
_SAME_IN_PYTHON = {pa.string(): str, pa.int64(): int, pa.float64(): float, pa.bool_(): bool}


def python_values(values: Produced, arrow_type: pa.DataType) -> list[Any]:
    """What `to_arrow(values, arrow_type).to_pylist()` gives, without the trip where it changes nothing."""
    kind = _SAME_IN_PYTHON.get(arrow_type)
    if kind is not None and isinstance(values, list) and all(v is None or _same(v, kind) for v in values):
        return values
    return to_arrow(values, arrow_type).to_pylist()


def _same(value: Any, kind: type) -> bool:
    if type(value) is not kind:
        return False
    if isinstance(value, float):
        return value == value  # NaN becomes null
    return not isinstance(value, int) or -(2**63) <= value < 2**63


def values_of(series: pd.Series) -> list[Any]:
    """A column as Python values, with None for every kind of null."""
    return [None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v for v in series.tolist()]


def produced_values(values: Produced) -> list[Any]:
    """What a step produced for a column as Python values, None for every kind of null."""
    if isinstance(values, pd.Series):
        return values_of(values)
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return [None if isinstance(v, float) and v != v else v for v in values.to_pylist()]
    return list(values)


def map_distinct(values: Iterable[Hashable], fn: Callable[[Any], Any]) -> list[Any]:
    """fn applied once per distinct non-null value (parsing is the cost), None for nulls."""
    cache: dict[Hashable, Any] = {}
    out: list[Any] = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        if value not in cache:
            cache[value] = fn(value)
        out.append(cache[value])
    return out


def blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None
