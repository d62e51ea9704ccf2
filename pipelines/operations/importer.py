"""`augment import`: files become a new, immutable, catalogued version of a dataset.

The records go through a run's own plan with no steps (BatchPlan): the same coercion, checks,
duplicate-key quarantine and record_uuid as `augment run`, read and written by Ray Data. The
version is made read-only on local storage before it is catalogued, with the path it came from.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from augment_core.settings import Settings
from augment_core.storage import StoragePaths, seal
from augment_core.store import MetadataStore, PathCatalogued, open_store
from pipelines.engine.batch import BatchPlan
from pipelines.engine.outputs import check_reconciled
from pipelines.inference.context import RunContext
from pipelines.operations.import_schema import ImportRefused
from pipelines.spec.base import check_names
from pipelines.spec.workflow import FileSource, SchemaSpec, SinkSpec, WorkflowSpec

log = logging.getLogger(__name__)


@dataclass
class ImportResult:
    dataset: str
    version: int
    rows_in: int
    valid: int
    quarantined: int
    path: str
    quarantine_path: str
    imported_from: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class _NoSpending:
    """The budget of an import, which calls no provider; unlike LocalBudget it pickles into Ray Data actors."""

    async def reserve(self, usd: float) -> bool:
        return True

    async def settle(self, step: str, reserved: float, usage: dict[str, float]) -> None:
        return None


def new_import_id() -> str:
    """Sortable by time, unique by a random suffix; the catalogue's run_id of the version."""
    return f"import-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"


def import_dataset(
    settings: Settings, source: FileSource, dataset: str, schema: SchemaSpec, import_id: str | None = None
) -> ImportResult:
    """Validate and write `source` as the next version of `dataset`. Needs Ray (joined or local).
    Raises ImportRefused before anything is written when the input or the target is wrong."""
    try:
        check_names([dataset], "--dataset")
    except ValueError as exc:
        raise ImportRefused(str(exc)) from None
    if "://" not in source.path:
        source = source.model_copy(update={"path": str(Path(source.path).resolve())})
        if not Path(source.path).exists():
            raise ImportRefused(f"{source.path}: no such file or folder")
    paths, store = StoragePaths(settings), open_store(settings)
    spec = WorkflowSpec(name="import", source=source, schema_=schema, sink=SinkSpec(dataset=dataset))
    import_id = import_id or new_import_id()
    plan = BatchPlan(spec, paths, import_id, context=RunContext(run_id=import_id, budget=_NoSpending()))
    store.refuse_catalogued(plan.output_path)
    for target in (plan.output_path, plan.quarantine_path):
        fs, in_fs = paths.filesystem(target)
        if fs.get_file_info(in_fs).type != pafs.FileType.NotFound:
            raise ImportRefused(f"{target} already exists: an import never writes into existing data")
    try:
        plan.validate()
        result = plan.write()
        check_reconciled(result.rows_in, result.valid, result.quarantined)
        seal(result.output_path)  # read-only before anyone can find it in the catalogue
        columns = {field.name: str(field.type) for field in result.schema}
        entry = store.add_next_dataset_version(
            dataset, result.output_path, columns, result.valid, import_id, imported_from=source.path
        )
    except BaseException:
        _remove_uncatalogued(paths, store, plan.output_path, plan.quarantine_path)
        raise
    return ImportResult(
        dataset=dataset, version=entry.version, rows_in=result.rows_in, valid=result.valid,
        quarantined=result.quarantined, path=result.output_path, quarantine_path=result.quarantine_path,
        imported_from=source.path,
    )


def _remove_uncatalogued(paths: StoragePaths, store: MetadataStore, *targets: str) -> None:
    """Drop what a failed import wrote (fresh folders of its own), unless it was catalogued after all."""
    for target in targets:
        try:
            store.refuse_catalogued(target)
            fs, in_fs = paths.filesystem(target)
            if fs.get_file_info(in_fs).type == pafs.FileType.NotFound:
                continue
            if "://" not in target:  # sealed folders must be writable again to be removed
                for folder, _dirs, _files in os.walk(in_fs):
                    os.chmod(folder, 0o755)
            fs.delete_dir(in_fs)
        except PathCatalogued:
            continue
        except Exception as exc:  # best effort: the import's own error is the one to report
            log.warning("could not remove %s after a failed import: %s", target, exc)
