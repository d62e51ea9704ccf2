"""/v1/datasets: catalogued dataset versions, what changed between two of them, and a version (or a
filtered slice of it) downloaded as CSV or Parquet, streamed."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.responses import StreamingResponse

from augment_core.identity import Principal
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from pipelines.operations.diff import as_json, diff_versions
from pipelines.operations.version_records import Format, export
from serve_apps.api_v1.deps import SettingsDep, StoreDep
from serve_apps.api_v1.schemas import DatasetVersionOut
from serve_apps.gateway.api_auth import Viewer
from serve_apps.gateway.redact import sees_paths

router = APIRouter(prefix="/datasets", tags=["datasets"])
DatasetName = Annotated[str, Path(min_length=1, max_length=200, description="The dataset's name.")]
MAX_VERSION = 2**31 - 1  # what the catalogue's INTEGER column holds: a larger one is a 422, not a database error


def shown(version: DatasetVersionOut, caller: Principal, settings: Settings) -> DatasetVersionOut:
    """A viewer sees no filesystem path (serve_apps/gateway/redact.py)."""
    return version if sees_paths(caller) else version.without_paths(settings.storage_root)


@router.get("", response_model=list[DatasetVersionOut])
def list_versions(caller: Viewer, settings: SettingsDep, store: StoreDep) -> list[DatasetVersionOut]:
    """Every version of every dataset, by dataset then version."""
    return [shown(DatasetVersionOut.from_version(v), caller, settings) for v in store.list_dataset_versions()]


@router.get("/{dataset}", response_model=list[DatasetVersionOut], responses={404: {"description": "No such dataset"}})
def dataset_versions(dataset: DatasetName, caller: Viewer, settings: SettingsDep,
                     store: StoreDep) -> list[DatasetVersionOut]:
    versions = store.list_dataset_versions(dataset)
    if not versions:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dataset {dataset!r}")
    return [shown(DatasetVersionOut.from_version(v), caller, settings) for v in versions]


@router.get("/{dataset}/diff", responses={404: {"description": "No such dataset or version"}})
def diff(
    dataset: DatasetName,
    _: Viewer,
    settings: SettingsDep,
    store: StoreDep,
    v1: Annotated[int, Query(ge=1, le=MAX_VERSION, description="The earlier version.")],
    v2: Annotated[int, Query(ge=1, le=MAX_VERSION, description="The later version.")],
    limit: Annotated[int, Query(ge=1, le=1000, description="Records of each kind listed.")] = 20,
    with_provenance: Annotated[bool, Query(description="Compare the *_provenance columns too.")] = False,
) -> dict[str, Any]:
    """Records added, removed and changed (field by field) from v1 to v2, matched by record_uuid."""
    try:
        before, after = store.get_dataset_version(dataset, v1), store.get_dataset_version(dataset, v2)
    except KeyError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None
    result = diff_versions(StoragePaths(settings), dataset, (v1, before.path), (v2, after.path),
                           limit=limit, with_provenance=with_provenance)
    return as_json(result)


MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


@router.get("/{dataset}/versions/{version}/download", response_class=StreamingResponse,
            responses={200: {"content": {MEDIA_TYPES["csv"]: {}, MEDIA_TYPES["parquet"]: {}},
                             "description": "The version's records as one file, streamed"},
                       404: {"description": "No such dataset, version or column"}})
def download(
    dataset: DatasetName,
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)],
    _: Viewer,
    settings: SettingsDep,
    store: StoreDep,
    format: Annotated[Format, Query(description="csv (formula-like text escaped) or parquet")] = "csv",  # noqa: A002
    column: Annotated[str | None, Query(max_length=200, description="Only rows whose column, as text, equals "
                                                                    "`value`.")] = None,
    value: Annotated[str | None, Query(max_length=10_000, description="What `column` must equal.")] = None,
) -> StreamingResponse:
    """A version, or the slice a filter keeps, as one CSV or Parquet file written batch by batch."""
    try:
        found = store.get_dataset_version(dataset, version)
        chunks = export(StoragePaths(settings), found.path, format, column, value)
    except KeyError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None
    part = f"-{column}" if column else ""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{dataset}-v{version}{part}.{format}")
    return StreamingResponse(chunks, media_type=MEDIA_TYPES[format],
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})
