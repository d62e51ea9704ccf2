"""Pieces of the batch run's Ray Data plan (engine/batch.py) that need no cluster: the two passes that
find duplicate keys without a shuffle, and the size of augment batches."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa

from pipelines.engine.batch import id_hashes, rows_with_hashes


def _validated(ids: list[str | None]) -> pa.Table:
    """A validated batch: a row without an id is invalid (it has errors)."""
    return pa.table({
        "record_uuid": pa.array(ids, pa.string()),
        "_errors": pa.array([None if i else json.dumps([{"field": "x", "reason": "bad"}]) for i in ids], pa.string()),
        "_source_order": pa.array([f"in.csv\x1f{n:015d}" for n in range(len(ids))], pa.string()),
    })


def test_each_valid_row_sends_one_hash_and_equal_ids_send_equal_hashes() -> None:
    hashes = id_hashes(_validated(["a", None, "b", "a"]))["hash"].to_numpy()
    assert hashes.dtype == np.uint64 and len(hashes) == 3  # the invalid row sends nothing
    assert hashes[0] == hashes[2] != hashes[1]


def test_only_rows_whose_hash_repeats_come_back_with_their_id_and_order() -> None:
    table = _validated(["a", "b", None, "a", "c"])
    [(repeated, _)] = [(h, n) for h, n in Counter(id_hashes(table)["hash"].to_pylist()).items() if n > 1]
    rows = rows_with_hashes(table, np.array([repeated], np.uint64)).to_pylist()
    assert rows == [{"record_uuid": "a", "_source_order": f"in.csv\x1f{0:015d}"},
                    {"record_uuid": "a", "_source_order": f"in.csv\x1f{3:015d}"}]
    assert rows_with_hashes(_validated([None]), np.array([repeated], np.uint64)).num_rows == 0


def test_record_ids_hash_from_their_hex_digits_and_any_other_ids_by_pandas() -> None:
    """Equal ids, equal hashes; distinct UUIDs, distinct hashes, whichever way the ids come (a
    slice, chunks); ids that are not lower-case UUID strings take pandas' hash, equal for equal."""
    import uuid

    import pandas as pd

    from pipelines.engine.kernels import id_hashes

    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, str(n))) for n in range(2_000)]
    hashes = id_hashes(pa.array(ids + ids[:10]))
    assert hashes.dtype == np.uint64 and len(np.unique(hashes)) == 2_000
    assert (hashes[:10] == hashes[2_000:]).all()
    assert (id_hashes(pa.array(ids).slice(7, 5)) == hashes[7:12]).all()
    assert (id_hashes(pa.chunked_array([ids[:3], ids[3:6]])) == hashes[:6]).all()
    fast = hashes[0]
    for other in ([ids[0].upper()] * 2, ["x" * 36] * 2, [ids[0] + " "] * 2, ["a", "a"]):
        got = id_hashes(pa.array(other))
        assert got[0] == got[1] == pd.util.hash_array(np.array(other, dtype=object))[0] and got[0] != fast


def test_batches_are_large_for_unpaid_workflows_unless_the_sink_says_otherwise() -> None:
    from pipelines.engine.batch import UNPAID_BATCH_ROWS, augment_batch_rows
    from pipelines.workflows.loader import load_spec
    from tests.conftest import ROOT, SAMPLE_SPEC

    sample = load_spec(SAMPLE_SPEC)  # deterministic steps only, batch_rows unset
    assert augment_batch_rows(sample) == UNPAID_BATCH_ROWS
    chosen = sample.model_copy(update={"sink": sample.sink.model_copy(update={"batch_rows": 256})})
    assert augment_batch_rows(chosen) == 256
    paid = load_spec(ROOT / "configs" / "workflows" / "organisations_llm.yaml")  # an llm step
    assert "batch_rows" not in paid.sink.model_fields_set and augment_batch_rows(paid) == paid.sink.batch_rows
