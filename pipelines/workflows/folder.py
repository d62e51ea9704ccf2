"""The workflows of a folder: every *.yaml spec, loaded or listed with its errors.

Specs are reloaded when their file's modification time changes, and the online form of a
workflow (chain built, reference tables loaded) is built once per file version, so a
long-lived server picks up edits without a restart and without reloading on every request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipelines.engine.inprocess import InProcessEngine
from pipelines.inference.context import RunContext
from pipelines.spec.errors import SpecError
from pipelines.spec.workflow import WorkflowSpec
from pipelines.workflows.loader import load_spec


@dataclass(frozen=True)
class WorkflowEntry:
    """One spec file: its workflow, or the reasons it cannot be used."""

    file: Path
    mtime_ns: int
    spec: WorkflowSpec | None
    errors: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The workflow's declared name; the file's stem when the spec did not load."""
        return self.spec.name if self.spec is not None else self.file.stem

    @property
    def usable(self) -> bool:
        return self.spec is not None and not self.errors


class WorkflowUnusable(Exception):
    """A workflow whose spec exists but cannot run; `errors` says why, one line each."""

    def __init__(self, name: str, errors: list[str]) -> None:
        self.name = name
        self.errors = errors
        super().__init__(f"workflow {name!r} cannot be used: " + "; ".join(errors))


class WorkflowFolder:
    """The *.yaml workflow specs of one folder. Safe to share between threads."""

    def __init__(self, folder: str | Path, context_for: Callable[[WorkflowSpec], RunContext] | None = None) -> None:
        """`context_for` gives each online workflow its providers' permits and cache (the API
        passes the cluster-wide limiters); by default, process-local ones and no cache."""
        self.folder = Path(folder)
        self.context_for = context_for or (lambda spec: RunContext(providers=spec.providers))
        self._lock = threading.Lock()
        self._loaded: dict[Path, WorkflowEntry] = {}
        self._online: dict[str, tuple[Path, int, InProcessEngine]] = {}

    def entries(self) -> list[WorkflowEntry]:
        """Every spec file, sorted by file name; a second file declaring a taken name is an error."""
        with self._lock:
            return self._scan()

    def online(self, name: str) -> InProcessEngine:
        """The workflow ready to augment requests. KeyError if unknown, WorkflowUnusable if broken."""
        with self._lock:
            entry, built = self._current(name)
            if built is not None:
                return built
            assert entry.spec is not None
            try:
                workflow = InProcessEngine(entry.spec, self.context_for(entry.spec))
            except Exception as exc:  # any failure to build the chain makes this workflow unusable
                raise WorkflowUnusable(name, [f"cannot build the augmenters: {exc}"]) from exc
            self._online[name] = (entry.file, entry.mtime_ns, workflow)
            return workflow

    def built(self, name: str) -> InProcessEngine | None:
        """`online(name)` when its current version is built already, else None (building it may load
        reference tables or models: the caller decides where to wait for that). Raises as online does."""
        with self._lock:
            return self._current(name)[1]

    def _current(self, name: str) -> tuple[WorkflowEntry, InProcessEngine | None]:
        """The usable entry of `name`, and its online form if built for this version of its file."""
        matches = [e for e in self._scan() if e.name == name]
        entry = next((e for e in matches if e.usable), matches[0] if matches else None)
        if entry is None:
            raise KeyError(name)
        if not entry.usable:
            raise WorkflowUnusable(name, list(entry.errors))
        cached = self._online.get(name)
        return entry, (cached[2] if cached is not None and cached[:2] == (entry.file, entry.mtime_ns) else None)

    def _scan(self) -> list[WorkflowEntry]:
        if not self.folder.is_dir():
            raise FileNotFoundError(f"workflows folder {self.folder} does not exist")
        entries: list[WorkflowEntry] = []
        owners: dict[str, Path] = {}
        for file in sorted(self.folder.glob("*.yaml")):
            try:
                mtime_ns = file.stat().st_mtime_ns
            except OSError as exc:  # a dangling link or a file removed while listing
                entries.append(WorkflowEntry(file, 0, None, (f"(file): cannot read: {exc.strerror or exc}",)))
                continue
            entry = self._loaded.get(file)
            if entry is None or entry.mtime_ns != mtime_ns:
                entry = _load(file, mtime_ns)
                self._loaded[file] = entry
            if entry.usable and entry.name in owners:
                entry = WorkflowEntry(
                    file, mtime_ns, entry.spec,
                    (f"name: workflow {entry.name!r} is already defined in {owners[entry.name].name}",),
                )
            if entry.usable:
                owners[entry.name] = file
            entries.append(entry)
        return entries


def _load(file: Path, mtime_ns: int) -> WorkflowEntry:
    try:
        return WorkflowEntry(file, mtime_ns, load_spec(file))
    except SpecError as exc:
        return WorkflowEntry(file, mtime_ns, None, tuple(exc.errors))
