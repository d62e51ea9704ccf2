"""Stream messages as records, and the micro-batch files a consumer checks after a crash."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from pipelines.io.stream_sink import (
    batch_files,
    ids_written_since,
    message_ids,
    remove_temp_files,
    write_batch,
)
from pipelines.io.stream_source import decode, id_key
from pipelines.spec.workflow import RedisStreamSource

JSON = RedisStreamSource(kind="redis_stream", stream="s", group="g")
FIELDS = RedisStreamSource(kind="redis_stream", stream="s", group="g", format="fields")


@pytest.mark.parametrize(("fields", "source", "record", "error"), [
    ({b"record": b'{"id": "1"}'}, JSON, {"id": "1"}, None),
    ({b"id": b"1", b"name": b"Acme"}, FIELDS, {"id": "1", "name": "Acme"}, None),
    ({b"other": b"x"}, JSON, None, "message has no field 'record' (fields: other)"),
    ({b"record": b"{nope"}, JSON, None,
     "field 'record' is not JSON: Expecting property name enclosed in double quotes at character 1"),
    ({b"record": b"\xff"}, JSON, None, "message is not valid UTF-8 (invalid start byte at byte 0)"),
    ({b"record": b"[" * 100_000}, JSON, None, "field 'record' is not JSON: nested too deeply"),
    ({b"record": b"1" * 5000}, JSON, None, "field 'record' is not JSON: Exceeds the limit (4300 digits) for integer"
                                           " string conversion: value has 5000 digits"),
])
def test_a_message_is_a_record_or_says_why_not(fields, source, record, error) -> None:
    decoded = decode(fields, source)
    assert (decoded.record, decoded.error) == (record, error)


def test_ids_compare_as_numbers_not_text() -> None:
    assert id_key("5-10") > id_key("5-9") and id_key("10-0") > id_key("9-99")


def test_only_files_that_can_hold_pending_ids_are_opened(tmp_path: Path) -> None:
    fs = pafs.LocalFileSystem()
    table = pa.table({"x": [1, 2]})
    write_batch(fs, str(tmp_path), table, ["1-0", "1-1"])
    write_batch(fs, str(tmp_path), table, ["2-0", "2-5"])
    (tmp_path / "1-0_1-1.parquet").write_bytes(b"not parquet: opening it would fail")
    assert ids_written_since(fs, [str(tmp_path)], "2-3") == {"2-0", "2-5"}
    assert [name for _, name, _ in sorted(batch_files(fs, str(tmp_path)))] == ["1-0", "2-0"]


def test_a_write_cut_short_leaves_no_file_and_its_leftover_is_removed(tmp_path: Path) -> None:
    fs = pafs.LocalFileSystem()
    (tmp_path / ".3-0_3-4.parquet.tmp").write_bytes(b"half a file")
    assert batch_files(fs, str(tmp_path)) == []
    assert remove_temp_files(fs, str(tmp_path)) == 1 and list(tmp_path.iterdir()) == []
    name = write_batch(fs, str(tmp_path), pa.table({"x": [1]}), ["3-0"])
    assert name == "3-0_3-0.parquet" and message_ids(fs, str(tmp_path / name)) == ["3-0"]
