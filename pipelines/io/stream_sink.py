"""Micro-batch files of a stream consumer: written whole or not at all, named by message ids.

Each micro-batch writes at most one Parquet file into the output folder (its valid records) and
one into the quarantine folder (its invalid ones), both named `<first id>_<last id>.parquet`
after the message ids they hold, with those ids, in row order, in the file's metadata. A file is
written under a temporary name and renamed, so a crash mid-write leaves no partial file. After a
crash between a write and its acknowledgement, `ids_written_since` finds which redelivered
messages are already in the files: it opens only the files whose last id is at or after the
oldest pending message, so memory stays bounded by what was in flight.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.io.stream_source import id_key

IDS_KEY = b"augment.message_ids"
_NAME = re.compile(r"^(\d+-\d+)_(\d+-\d+)\.parquet$")
_TEMP_SUFFIX = ".tmp"


def file_name(ids: list[str]) -> str:
    ordered = sorted(ids, key=id_key)
    return f"{ordered[0]}_{ordered[-1]}.parquet"


def write_batch(fs: pafs.FileSystem, folder: str, table: pa.Table, ids: list[str]) -> str:
    """Write the records of messages `ids` (one row each, same order) as one file; its name."""
    assert table.num_rows == len(ids) > 0, (table.num_rows, len(ids))
    metadata = dict(table.schema.metadata or {}) | {IDS_KEY: json.dumps(ids).encode()}
    table = table.replace_schema_metadata(metadata)
    fs.create_dir(folder, recursive=True)
    name = file_name(ids)
    final, temp = f"{folder}/{name}", f"{folder}/.{name}{_TEMP_SUFFIX}"
    if isinstance(fs, pafs.LocalFileSystem):
        # fsync before the rename, and the folder after it: the file is durable before any ack.
        with open(temp, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
        folder_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(folder_fd)
        finally:
            os.close(folder_fd)
    else:  # object stores make an object visible whole, once its upload completes
        pq.write_table(table, final, filesystem=fs)
    return name


def batch_files(fs: pafs.FileSystem, folder: str) -> list[tuple[str, str, str]]:
    """(path, first id, last id) of every micro-batch file of a folder (none when it is missing)."""
    if fs.get_file_info(folder).type == pafs.FileType.NotFound:
        return []
    found = []
    for info in fs.get_file_info(pafs.FileSelector(folder)):
        match = _NAME.match(info.base_name)
        if match:
            found.append((info.path, match.group(1), match.group(2)))
    return found


def ids_written_since(fs: pafs.FileSystem, folders: list[str], oldest: str) -> set[str]:
    """Message ids held by the files of `folders` that may hold a message at or after `oldest`."""
    floor = id_key(oldest)
    written: set[str] = set()
    for folder in folders:
        for path, _, last in batch_files(fs, folder):
            if id_key(last) >= floor:
                written.update(message_ids(fs, path))
    return written


def message_ids(fs: pafs.FileSystem, path: str) -> list[str]:
    metadata = pq.read_schema(fs.open_input_file(path)).metadata or {}
    return json.loads(metadata.get(IDS_KEY, b"[]"))


def remove_temp_files(fs: pafs.FileSystem, folder: str) -> int:
    """Delete what a crash mid-write left behind; the number removed."""
    if fs.get_file_info(folder).type == pafs.FileType.NotFound:
        return 0
    temps = [i.path for i in fs.get_file_info(pafs.FileSelector(folder)) if i.base_name.endswith(_TEMP_SUFFIX)]
    for path in temps:
        fs.delete_file(path)
    return len(temps)


def schema_of(fs: pafs.FileSystem, folder: str) -> Any:
    """The schema of the folder's first micro-batch file, or None when it has none."""
    files = batch_files(fs, folder)
    return pq.read_schema(fs.open_input_file(files[0][0])).remove_metadata() if files else None
