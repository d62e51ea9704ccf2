"""Human decisions are looked up once per batch for the whole chain, not once per step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa
import yaml

from augment_core.reviews import Kept
from pipelines.engine.inprocess import InProcessEngine
from pipelines.inference.context import RunContext
from pipelines.workflows.loader import parse_spec

SPEC = """\
name: contacts
source: {kind: csv, path: x.csv}
schema:
  key: id
  fields:
    id: {type: string, required: true}
    email: {type: string}
    website: {type: string}
steps:
  - use: normalize_email
    params: {column: email}
  - use: normalize_url
    params: {column: website}
sink: {dataset: contacts}
"""


class CountingLookup:
    """Decides one field of every record; counts how often it is asked."""

    def __init__(self, field: str, value: str) -> None:
        self.field, self.value, self.asked = field, value, []

    def __call__(self, record_uuids: Sequence[str], types: Mapping[str, pa.DataType]) -> dict[tuple[str, str], Kept]:
        self.asked.append(sorted(types))
        if self.field not in types:
            return {}
        return {(r, self.field): Kept("edited", self.value, 7) for r in record_uuids}


def test_one_lookup_serves_every_step_and_each_keeps_its_own_decisions() -> None:
    spec = parse_spec(yaml.safe_load(SPEC))
    lookup = CountingLookup("website_url", "https://decided.example/")
    engine = InProcessEngine(spec, RunContext(providers=spec.providers, decisions=lookup))
    rows = [{"id": "a", "email": "A@Example.COM", "website": "example.com"},
            {"id": "b", "email": "b@example.org", "website": "example.org"}]
    result = engine.augment(rows)
    assert len(lookup.asked) == 1  # two steps, one lookup
    assert "website_url" in lookup.asked[0] and "email_normalized" in lookup.asked[0]
    assert [r["website_url"] for r in result.records] == ["https://decided.example/"] * 2
    assert [r["email_normalized"] for r in result.records] == ["a@example.com", "b@example.org"]  # computed
