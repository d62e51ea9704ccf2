"""What viewers see of filesystem paths: none. A viewer reads runs and datasets, not the server's
layout, so paths in what they read are cut to what locates the thing without it: a path under the
storage root becomes relative to it ('datasets/orgs/run-…'), any other one its file name, and
absolute paths in free text (errors) their last part. Operators and admins, who start runs from
files on the server, see them whole through the API; the panels, pages in a browser where a server
path opens nothing, show every role the cut paths."""

from __future__ import annotations

import os
import re
from typing import Any

from augment_core.events import Event
from augment_core.identity import Principal, Role
from augment_core.store import RunRecord

# An absolute POSIX path in free text: a '/' that starts no URL part (not after a letter, ':' or '/').
_ABSOLUTE = re.compile(r"(?<![\w:/.~-])(?:/[^\s'\"/,;()\[\]{}]+)+")


def sees_paths(principal: Principal) -> bool:
    return principal.role.allows(Role.operator)


def public_path(path: str, storage_root: str | None = None) -> str:
    """Relative to the storage root when below it, else the last part (the file's name)."""
    root = storage_root.rstrip("/") + "/" if storage_root else None
    if root and path.startswith(root):
        return path[len(root):]
    return path.rstrip("/").rsplit("/", 1)[-1]


def hide_paths(text: str | None) -> str | None:
    if not text:
        return text
    return _ABSOLUTE.sub(lambda m: m.group(0).rsplit("/", 1)[-1], text)


def public_paths_in(value: Any, storage_root: str) -> Any:
    """A JSON-like value with every '…path' entry made public, at any depth."""
    if isinstance(value, dict):
        return {k: public_path(v, storage_root) if k.endswith("path") and isinstance(v, str)
                else public_paths_in(v, storage_root) for k, v in value.items()}
    if isinstance(value, list):
        return [public_paths_in(v, storage_root) for v in value]
    return value


def run_without_paths(record: RunRecord, storage_root: str) -> RunRecord:
    """The run with its spec's file name, output paths relative to the storage root, and no
    absolute path in its errors."""
    return record.model_copy(update={
        "spec_path": public_path(record.spec_path),
        "output": public_paths_in(record.output, storage_root),
        "error": hide_paths(record.error),
        "steps": [s.model_copy(update={"error": hide_paths(s.error)}) for s in record.steps],
    })


def event_without_paths(event: Event, storage_root: str) -> Event:
    """The event with its '…path' entries made public and no absolute path in its texts."""
    def cut(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: public_path(v, storage_root) if k.endswith("path") and isinstance(v, str) else cut(v)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [cut(v) for v in value]
        return hide_paths(value) if isinstance(value, str) else value

    return event.model_copy(update={"data": cut(event.data)})


def files_by_name(value: Any) -> Any:
    """A JSON-like value with every absolute path of an existing file (a step's reference table)
    cut to its name, at any depth; other strings (URL paths, templates) as they are."""
    if isinstance(value, dict):
        return {k: files_by_name(v) for k, v in value.items()}
    if isinstance(value, list):
        return [files_by_name(v) for v in value]
    if isinstance(value, str) and value.startswith("/") and os.path.exists(value):
        return public_path(value)
    return value
