"""waterfall: several augmenters tried in order for the same columns, until one is accepted."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
from pydantic import Field, ValidationError, field_validator, model_validator

from pipelines.augmenters.base import (
    Augmenter,
    AugmenterParams,
    NestedParamsError,
    values_of,
)
from pipelines.augmenters.registry import augmenters, register
from pipelines.inference.context import RunContext
from pipelines.spec.base import IDENTIFIER, StrictModel


class Candidate(StrictModel):
    use: str
    name: str | None = Field(default=None, pattern=IDENTIFIER)
    params: dict[str, Any] = Field(default_factory=dict)


class Accept(StrictModel):
    """When a candidate's values are taken: its call succeeded and every rule here holds."""

    non_empty: bool = Field(default=True, description="Every output has a value (blank text counts as empty).")
    regex: dict[str, str] = Field(default_factory=dict, description="Output -> pattern its text must fully match.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, patterns: dict[str, str]) -> dict[str, str]:
        for column, pattern in patterns.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{column}: invalid regular expression: {exc}") from None
        return patterns


class WaterfallParams(AugmenterParams):
    outputs: list[str] = Field(min_length=1, max_length=50, description="The columns every candidate adds.")
    candidates: list[Candidate] = Field(min_length=2, max_length=10)
    accept: Accept = Field(default_factory=Accept)

    @model_validator(mode="after")
    def _known(self) -> "WaterfallParams":
        known = augmenters()
        for i, candidate in enumerate(self.candidates):
            if candidate.use not in known:
                raise ValueError(f"candidates[{i}].use: unknown augmenter {candidate.use!r}")
            if candidate.use == "waterfall":
                raise ValueError(f"candidates[{i}].use: a waterfall cannot hold a waterfall")
        for column in self.accept.regex:
            if column not in self.outputs:
                raise ValueError(f"accept.regex: {column!r} is not one of the outputs")
        return self


@register("waterfall")
class Waterfall(Augmenter):
    """Tries each candidate in order on the records no earlier candidate settled; a record takes
    the first values accepted (call ok, `accept` rules hold) and names their candidate. A record
    no candidate settles ends 'error' (or 'skipped' when every candidate skipped it), with why
    each one was passed over.

    Reads: what the candidates read.
    Adds: `outputs` (typed as the candidates add them), `<step>_source`, `<step>_status`,
    `<step>_error`, `<step>_provenance`.
    """

    Params = WaterfallParams
    params: WaterfallParams
    string_inputs = False

    def __init__(self, params: WaterfallParams, step_name: str, overwrite: bool = False) -> None:
        super().__init__(params, step_name, overwrite)
        known = augmenters()
        self.candidates: list[Augmenter] = []
        for i, c in enumerate(params.candidates):
            cls = known[c.use]
            try:
                candidate_params = cls.Params.model_validate(c.params)
            except ValidationError as exc:
                raise NestedParamsError(("candidates", i, "params"), exc) from None
            self.candidates.append(cls(candidate_params, c.name or f"{step_name}_{i}_{c.use}"))

    @classmethod
    def provider_names(cls, params: Mapping[str, Any]) -> list[str]:
        known = augmenters()
        names: list[str] = []
        for c in params.get("candidates") or []:
            if isinstance(c, dict) and c.get("use") in known:
                names += known[c["use"]].provider_names(c.get("params") or {})
        return names

    def provider_errors(self, providers: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [(f"candidates[{i}].params.{param}", reason)
                for i, c in enumerate(self.candidates) for param, reason in c.provider_errors(providers)]

    def secret_names(self, providers: Mapping[str, Any]) -> list[str]:
        return list(dict.fromkeys(n for c in self.candidates for n in c.secret_names(providers)))

    def reads(self) -> list[tuple[str, str]]:
        return [(f"candidates[{i}].params.{param}", column)
                for i, c in enumerate(self.candidates) for param, column in c.reads()]

    def type_errors(self, columns: dict[str, pa.DataType]) -> list[tuple[str, str]]:
        errors = []
        for i, c in enumerate(self.candidates):
            mine = {col: columns[col] for _, col in c.reads() if col in columns}
            errors += [(f"candidates[{i}].params.{param}", reason) for param, reason in c.type_errors(mine)]
            if c.string_inputs:
                errors += [(f"candidates[{i}].params.{param}", f"{col!r} is {columns[col]}, {c.name} reads strings")
                           for param, col in c.reads() if col in columns and not pa.types.is_string(columns[col])]
            missing = [o for o in self.params.outputs if o not in c.adds()]
            if missing:
                errors.append((f"candidates[{i}]", f"does not add {missing} (it adds {sorted(c.adds())})"))
            elif i and any(c.adds()[o] != self.candidates[0].adds()[o] for o in self.params.outputs):
                errors.append((f"candidates[{i}]", "adds the outputs with other types than candidates[0]"))
        return errors

    def adds(self) -> dict[str, pa.DataType]:
        first = self.candidates[0].adds()
        out = {o: first.get(o, pa.string()) for o in self.params.outputs}
        name = self.step_name
        return {**out, f"{name}_source": pa.string(), f"{name}_status": pa.string(),
                f"{name}_error": pa.string(), f"{name}_provenance": pa.string()}

    def status_column(self) -> str | None:
        return f"{self.step_name}_status"

    def value_columns(self) -> list[str]:
        return list(self.params.outputs)

    def bind(self, context: RunContext) -> None:
        for c in self.candidates:
            c.bind(context)

    def setup(self) -> None:
        for c in self.candidates:
            c.setup()

    def process_batch(self, batch: pd.DataFrame) -> Mapping[str, Sequence[Any]]:
        n = len(batch)
        values: dict[str, list[Any]] = {o: [None] * n for o in self.params.outputs}
        source: list[str | None] = [None] * n
        provenance: list[dict[str, Any]] = [{} for _ in range(n)]
        passed_over: list[list[str]] = [[] for _ in range(n)]
        pending = list(range(n))
        for candidate in self.candidates:
            if not pending:
                break
            columns = list(dict.fromkeys(col for _, col in candidate.reads()))
            sub = batch.iloc[pending][columns].reset_index(drop=True)
            produced = {k: _values(v) for k, v in candidate.process_batch(sub).items()}
            status = candidate.status_column()
            still = []
            for j, row in enumerate(pending):
                found = {o: produced[o][j] for o in self.params.outputs}
                reason = None
                if status and produced[status][j] != "ok":
                    reason = produced[f"{candidate.step_name}_error"][j] or produced[status][j]
                else:
                    reason = self._rejection(found)
                if reason is None:
                    for o, v in found.items():
                        values[o][row] = v
                    source[row] = candidate.step_name
                    if status:
                        provenance[row] = json.loads(produced[f"{candidate.step_name}_provenance"][j])
                    provenance[row].update(augmenter=candidate.name, step=candidate.step_name)
                else:
                    passed_over[row].append(f"{candidate.step_name}: {reason}")
                    still.append(row)
            pending = still
        statuses: list[str] = []
        errors: list[str | None] = []
        for row in range(n):
            if source[row] is not None:
                statuses.append("ok")
                errors.append(None)
            else:
                all_skipped = all(": skipped" in p for p in passed_over[row])
                statuses.append("skipped" if all_skipped else "error")
                errors.append("no candidate was accepted: " + "; ".join(passed_over[row]))
            provenance[row]["waterfall"] = {"step": self.step_name, "passed_over": passed_over[row]}
        name = self.step_name
        return {**values, f"{name}_source": source, f"{name}_status": statuses, f"{name}_error": errors,
                f"{name}_provenance": [json.dumps(p, sort_keys=True, default=str) for p in provenance]}

    def _rejection(self, found: Mapping[str, Any]) -> str | None:
        if self.params.accept.non_empty:
            empty = [o for o, v in found.items() if v is None or (isinstance(v, str) and not v.strip())]
            if empty:
                return f"empty {', '.join(empty)}"
        for column, pattern in self.params.accept.regex.items():
            value = found.get(column)
            if value is None or not re.fullmatch(pattern, str(value)):
                return f"{column} {str(value)[:60]!r} does not match {pattern!r}"
        return None


def _values(column: Any) -> list[Any]:
    return values_of(column) if isinstance(column, pd.Series) else list(column)
