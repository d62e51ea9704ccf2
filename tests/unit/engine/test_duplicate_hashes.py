"""The two passes that find duplicate keys in a batch run without a shuffle (engine/batch.py)."""

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
