"""A workflow's review policy: checked against the chain, and ready to match a table's rows.

What goes to review: with `all`, every step's output fields of every record; with rules, the
records a rule matches, and the output fields of the step concerned (the step a rule names, or
the step that adds the field it tests; every step's outputs for a field of the schema).
`review.fields` replaces those fields with its own list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.augmenters.base import Augmenter
from pipelines.augmenters.registry import build_chain
from pipelines.spec.workflow import ReviewRule, WorkflowSpec


def check_review(spec: WorkflowSpec) -> list[str]:
    """Every field and step the review policy names must exist in the chain, with a fitting type."""
    review = spec.review
    if review.policy == "none":
        return []
    chain = build_chain(spec)
    columns: dict[str, pa.DataType] = {n: f.type.arrow for n, f in spec.schema_.fields.items()}
    for augmenter in chain:
        columns.update(augmenter.adds())
    steps = {a.step_name: a for a in chain}
    outputs = {c for a in chain for c in a.value_columns()}
    errors = []
    if review.policy == "all" and not outputs:
        errors.append("review.policy: 'all' reviews the steps' outputs, and this workflow has no step")
    for i, rule in enumerate(review.rules):
        where = f"review.rules[{i}]"
        if rule.field is not None:
            kind = columns.get(rule.field)
            if kind is None:
                errors.append(f"{where}.field: {rule.field!r} is not a field of the schema or a column a step adds")
            elif rule.below is not None and not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                errors.append(f"{where}.below: {rule.field!r} is {kind}, below compares numbers")
            elif rule.regex is not None and not pa.types.is_string(kind):
                errors.append(f"{where}.regex: {rule.field!r} is {kind}, regex checks strings")
        if rule.step is not None:
            if rule.step not in steps:
                errors.append(f"{where}.step: unknown step {rule.step!r} (steps: {', '.join(steps) or 'none'})")
            elif rule.failed and steps[rule.step].status_column() is None:
                errors.append(f"{where}.failed: step {rule.step!r} ({steps[rule.step].name}) cannot fail per record")
    for j, name in enumerate(review.fields or []):
        if name not in outputs:
            errors.append(f"review.fields[{j}]: {name!r} is not an output of a step"
                          f" (outputs: {', '.join(sorted(outputs)) or 'none'})")
    return errors


@dataclass(frozen=True)
class Matcher:
    """One rule (or `all`) ready to run on a table: which rows it matches, which fields it sends."""

    reason: str
    fields: tuple[str, ...]
    rule: ReviewRule | None = None
    status_column: str | None = None

    def columns(self) -> set[str]:
        if self.rule is None:
            return set()
        return {self.rule.field} if self.rule.field else ({self.status_column} if self.status_column else set())

    def matches(self, table: pa.Table) -> list[bool]:
        rule, n = self.rule, table.num_rows
        if rule is None:
            return [True] * n
        if rule.step is not None:
            if self.status_column is None:  # a step that cannot fail: every record it saw
                return [True] * n
            wanted = "error" if rule.failed else "ok"
            return [s == wanted for s in table[self.status_column].to_pylist()]
        values = table[rule.field]
        if rule.below is not None:
            return pc.fill_null(pc.less(values, rule.below), False).to_pylist()
        if rule.regex is not None:
            pattern = re.compile(rule.regex)
            return [v is None or not pattern.fullmatch(v) for v in values.to_pylist()]
        return [v is None or (isinstance(v, str) and not v.strip()) for v in values.to_pylist()]


def matchers(spec: WorkflowSpec, chain: list[Augmenter] | None = None) -> list[Matcher]:
    """The policy's rules, each ready to match a table (none for policy none)."""
    review = spec.review
    if review.policy == "none":
        return []
    chain = chain if chain is not None else build_chain(spec)
    steps = {a.step_name: a for a in chain}
    adder = {c: a for a in chain for c in a.adds()}
    every = tuple(c for a in chain for c in a.value_columns())
    override = tuple(review.fields) if review.fields else None
    if review.policy == "all":
        return [Matcher("policy all", override or every)]
    found = []
    for rule in review.rules:
        if rule.step is not None:
            step = steps[rule.step]
            status = step.status_column()
            reason = f"step {rule.step} failed" if rule.failed else f"output of step {rule.step}"
            found.append(Matcher(reason, override or tuple(step.value_columns()), rule, status))
            continue
        concerned = adder.get(rule.field or "")
        fields = tuple(concerned.value_columns()) if concerned else every
        if rule.below is not None:
            reason = f"{rule.field} below {rule.below:g}"
        elif rule.regex is not None:
            reason = f"{rule.field} does not match {rule.regex!r}"
        else:
            reason = f"{rule.field} is empty"
        found.append(Matcher(reason, override or fields, rule))
    return found


