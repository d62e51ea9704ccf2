"""The workflows folder as the API sees it: broken specs listed, edits picked up, names unique."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.workflows.folder import WorkflowFolder, WorkflowUnusable

SPEC = """\
name: {name}
version: {version}
source: {{kind: csv, path: x.csv}}
schema: {{fields: {{id: {{type: string}}}}}}
sink: {{dataset: out}}
"""


def write(folder: Path, file: str, name: str, version: int = 1) -> Path:
    path = folder / file
    path.write_text(SPEC.format(name=name, version=version), encoding="utf-8")
    return path


def touch_later(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_broken_specs_are_listed_with_their_errors(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", "good")
    (tmp_path / "bad.yaml").write_text("name: [", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a spec", encoding="utf-8")
    entries = {e.name: e for e in WorkflowFolder(tmp_path).entries()}
    assert set(entries) == {"good", "bad"}
    assert entries["good"].usable and entries["good"].errors == ()
    assert not entries["bad"].usable and "invalid YAML" in entries["bad"].errors[0]


def test_a_second_file_with_a_taken_name_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "same")
    write(tmp_path, "b.yaml", "same", version=2)
    first, second = WorkflowFolder(tmp_path).entries()
    assert first.usable and not second.usable
    assert second.errors == ("name: workflow 'same' is already defined in a.yaml",)
    assert WorkflowFolder(tmp_path).online("same").spec.version == 1


def test_online_workflows_are_cached_until_the_file_changes(tmp_path: Path) -> None:
    path = write(tmp_path, "w.yaml", "w")
    catalog = WorkflowFolder(tmp_path)
    assert catalog.built("w") is None  # not built until online() is asked
    first = catalog.online("w")
    assert catalog.online("w") is first and catalog.built("w") is first
    write(tmp_path, "w.yaml", "w", version=2)
    touch_later(path)
    assert catalog.built("w") is None  # the edited version is not built yet
    assert catalog.online("w").spec.version == 2
    assert catalog.built("w") is catalog.online("w")


def test_unknown_and_broken_workflows_raise_distinct_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\n", encoding="utf-8")
    catalog = WorkflowFolder(tmp_path)
    for ask in (catalog.online, catalog.built):
        with pytest.raises(KeyError):
            ask("nope")
        with pytest.raises(WorkflowUnusable, match="source: Field required"):
            ask("bad")


def test_a_missing_folder_is_an_error_not_an_empty_list(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        WorkflowFolder(tmp_path / "missing").entries()
