"""The `data` Serve application: the data dashboard (ui.data) on the panel framework, for every
role. It reads the catalogue and the versions' files through the same functions as the API and the
CLI (`augment diff`'s code for diffs); a version's overview is read once per replica and kept,
since a version never changes. Downloads are the API's streamed route, which checks the caller."""

from __future__ import annotations

import datetime as dt
from collections import Counter, OrderedDict
from threading import Lock
from typing import Any, cast
from urllib.parse import quote

import gradio as gr
import pyarrow as pa
import pyarrow.dataset as pads
from ray import serve
from ray.serve import Application, Deployment

from augment_core.identity import Role
from augment_core.reviews import decided_per_day, decisions_by_field
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import RunRecord, open_store, utcnow
from pipelines.operations.diff import diff_versions
from pipelines.operations.provider_usage import spend_per_day
from pipelines.operations.version_profile import VersionProfile, profile_version
from pipelines.operations.version_records import read_page
from serve_apps.gateway.panels import PanelApp, PanelArgs
from serve_apps.gateway.redact import run_without_paths
from ui.data import STYLE, DataAccess, RecordFilter, build_data_panel, download_query

KEPT_PROFILES = 32
RECENT_RUNS = 200
MONTH_RUNS = 5000  # runs of the last 30 days summed for the spend plots
QUARANTINE_RUNS = 50  # recent runs with quarantined records whose reasons are counted
DIFF_SHOWN = 50  # changed records listed (the counts are of all)


class Profiles:
    """Version overviews, the most recently asked `limit` kept (versions never change)."""

    def __init__(self, settings: Settings, limit: int = KEPT_PROFILES) -> None:
        self.settings, self.limit = settings, limit
        self.kept: OrderedDict[tuple[str, int], VersionProfile] = OrderedDict()
        self.lock = Lock()

    def get(self, dataset: str, version: int) -> VersionProfile:
        key = (dataset, version)
        with self.lock:
            if key in self.kept:
                self.kept.move_to_end(key)
                return self.kept[key]
        found = open_store(self.settings).get_dataset_version(dataset, version)
        profile = profile_version(StoragePaths(self.settings), found.path)
        with self.lock:
            self.kept[key] = profile
            while len(self.kept) > self.limit:
                self.kept.popitem(last=False)
        return profile


def data_access(settings: Settings, prefix: str = "", profiles: Profiles | None = None) -> DataAccess:
    kept = profiles or Profiles(settings)
    paths = StoragePaths(settings)

    def records(dataset: str, version: int, columns: list[str] | None, wanted: RecordFilter, limit: int,
                offset: int) -> tuple[list[dict[str, Any]], int]:
        found = open_store(settings).get_dataset_version(dataset, version)
        return read_page(paths, found.path, columns, wanted.column, wanted.value, offset, limit)

    def diff(dataset: str, before: int, after: int) -> Any:
        store = open_store(settings)
        old, new = store.get_dataset_version(dataset, before), store.get_dataset_version(dataset, after)
        return diff_versions(paths, dataset, (before, old.path), (after, new.path), limit=DIFF_SHOWN)

    def month() -> list[RunRecord]:
        return open_store(settings).list_runs(limit=MONTH_RUNS, since=utcnow() - dt.timedelta(days=30))

    def quarantine_reasons() -> list[tuple[str, int]]:
        """The most frequent reasons records were quarantined for, over the recent runs that had any."""
        counts: Counter[str] = Counter()
        for run in [r for r in open_store(settings).list_runs(limit=RECENT_RUNS) if r.counts.get("quarantined")][
                :QUARANTINE_RUNS]:
            fs, path = paths.filesystem(run.output.get("quarantine_path") or paths.quarantine(run.dataset, run.id))
            try:
                table = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=["field", "reason"])
            except (OSError, ValueError, pa.ArrowInvalid):  # gone, or being written: the others still count
                continue
            counts.update(f"{f}: {r}" for f, r in zip(table["field"].to_pylist(), table["reason"].to_pylist(),
                                                         strict=True))
        return counts.most_common(10)

    def download_url(dataset: str, version: int, fmt: str, wanted: RecordFilter) -> str:
        return (f"{prefix}/api/v1/datasets/{quote(dataset, safe='')}/versions/{version}/download?"
                f"{download_query(fmt, wanted)}")

    return DataAccess(
        versions=lambda: open_store(settings).list_dataset_versions(),
        profile=kept.get,
        decisions=lambda dataset, version: decisions_by_field(open_store(settings), dataset, version),
        records=records, diff=diff,
        runs=lambda: [run_without_paths(r, settings.storage_root)
                      for r in open_store(settings).list_runs(limit=RECENT_RUNS)],
        decided_per_day=lambda: decided_per_day(open_store(settings)),
        quarantine_reasons=quarantine_reasons,
        spend_per_day=lambda: spend_per_day(month()),
        download_url=download_url,
    )


@serve.deployment(num_replicas=2, max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.05})
@serve.ingress()
class DataPanel(PanelApp):
    title = "Data"
    role = Role.viewer
    head = STYLE

    def health(self) -> str:
        open_store(self.settings).list_dataset_versions("-")  # the store answers
        return "ok"

    def blocks(self) -> gr.Blocks:
        return build_data_panel(data_access(self.settings, self.args.prefix))


def build_app(args: dict[str, Any]) -> Application:
    # The decorators made the class a Deployment (mypy does not apply class decorators).
    return cast(Deployment, DataPanel).bind(PanelArgs.model_validate(args))
