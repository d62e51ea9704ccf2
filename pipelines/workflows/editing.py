"""Editing the workflows of a folder, with every version kept in the metadata store
(augment_core/workflow_history.py): a text checked as `augment run` checks a file, saved as the
next version into both the folder and the store, and the folder's own texts imported as found.

A saved text carries its number in its `version:` field, which every run records, so the CLI, the
API and the panels, which all read the folder, run and name the same version. A file edited by
hand without a new number cannot be kept as that version (another text has it): it is reported,
and the next save through the editor gives it one.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from augment_core.workflow_history import FOLDER_AUTHOR, VersionTaken, WorkflowHistory, WorkflowVersion
from pipelines.spec.errors import SpecError
from pipelines.spec.workflow import WorkflowSpec
from pipelines.workflows.loader import load_spec_text

SPEC_SUFFIXES = (".yaml", ".yml")
_VERSION_LINE = re.compile(r"^version:[^\n]*$", re.MULTILINE)
_NAME_LINE = re.compile(r"^name:[^\n]*$", re.MULTILINE)


class EditError(Exception):
    """A save that was not done; `errors` says why, one 'path: reason' line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class FolderSpec:
    """One spec file of the folder, as the editor lists it."""

    file: str
    workflow: str  # its declared name, else the file's stem
    version: int | None  # its declared version
    errors: tuple[str, ...]  # why it does not load ("" if it does)
    drift: str  # set when the file's text is not the one kept as its version


def check_text(text: str, folder: Path, file: str) -> tuple[WorkflowSpec | None, list[str]]:
    """The spec and no errors, or None and every error by path (the CLI's loader, relative
    paths from the folder)."""
    try:
        return load_spec_text(text, file, folder.resolve()), []
    except SpecError as exc:
        return None, list(exc.errors)


def declared(text: str) -> tuple[str | None, int | None]:
    """The `name:` and `version:` a text declares, if it parses that far."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    name, version = data.get("name"), data.get("version", 1)
    return (name if isinstance(name, str) else None,
            version if isinstance(version, int) and not isinstance(version, bool) else None)


def with_version(text: str, version: int) -> str:
    """The text with its top-level `version:` set (added after `name:` when missing)."""
    line = f"version: {version}"
    if _VERSION_LINE.search(text):
        return _VERSION_LINE.sub(line, text, count=1)
    if match := _NAME_LINE.search(text):
        return text[:match.end()] + "\n" + line + text[match.end():]
    return line + "\n" + text


def unified_diff(old: str, new: str, old_label: str, new_label: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=old_label, tofile=new_label)) or "(no change)"


def spec_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file())


def import_folder(history: WorkflowHistory, folder: Path) -> list[FolderSpec]:
    """Every spec file of the folder, its text kept as its declared version where no version of
    that number is kept yet."""
    found = []
    for path in spec_files(folder):
        text = path.read_text(encoding="utf-8", errors="replace")
        name, version = declared(text)
        _, errors = check_text(text, folder, path.name)
        drift = ""
        if name is not None and version is not None:
            try:
                history.keep(name, version, path.name, text, FOLDER_AUTHOR)
            except VersionTaken:
                drift = (f"{path.name} was changed outside augment without a new version number: runs of it"
                         f" record version {version}, whose kept text differs; save it here to number it")
        found.append(FolderSpec(file=path.name, workflow=name or path.stem, version=version,
                                errors=tuple(errors), drift=drift))
    return found


def save(history: WorkflowHistory, folder: Path, file: str, text: str, author: str,
         based_on: int | None) -> WorkflowVersion:
    """Check the text, number it the workflow's next version, write it to the folder and keep it.
    `based_on` is the version the editor opened: if another was saved since, nothing is written
    (reload first), so that nobody's edit is overwritten unseen."""
    if Path(file).name != file or Path(file).suffix not in SPEC_SUFFIXES:
        raise EditError([f"(file): {file!r} is not a .yaml file name in the workflows folder"])
    spec, errors = check_text(text, folder, file)
    if spec is None:
        raise EditError(errors)
    path = folder / file
    current = path.read_text(encoding="utf-8", errors="replace") if path.exists() else None
    if current is not None:
        name, _ = declared(current)
        if name is not None and name != spec.name:
            raise EditError([f"name: {file} holds workflow {name!r}; keep the name, or save a new file"])
    latest = history.latest_number(spec.name)
    if based_on is not None and latest > based_on:
        by = history.get(spec.name, latest)
        raise EditError([f"(file): version {latest} was saved meanwhile by {by.author if by else 'someone'};"
                         " reload it, then make your change again"])
    version = max(latest, spec.version) + 1
    numbered = with_version(text.replace("\r\n", "\n").rstrip("\n") + "\n", version)  # one final newline
    _write(path, numbered)
    return history.keep(spec.name, version, file, numbered, author)


def _write(path: Path, text: str) -> None:
    """All or nothing: a reader (the API, a run starting) sees the old text or the new one."""
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except OSError as exc:
        raise EditError([f"(file): cannot write {path.name}: {exc.strerror or exc}"]) from None
