"""The `dataset` source: a run reads one catalogued version of a dataset (imported or written
by an earlier run), pinned when the run starts so that 'latest' means one version throughout."""

from __future__ import annotations

from augment_core.store import DatasetVersion, MetadataStore
from pipelines.io.files import SourceError
from pipelines.spec.workflow import DatasetSource, WorkflowSpec


def resolve_dataset_source(spec: WorkflowSpec, store: MetadataStore) -> DatasetVersion | None:
    """Pin the spec's dataset source to a catalogued version (the newest for 'latest'), once;
    None for other sources. SourceError when the dataset or the version does not exist."""
    source = spec.source
    if not isinstance(source, DatasetSource):
        return None
    wanted = source.resolved_version or source.version
    versions = store.list_dataset_versions(source.name)
    if not versions:
        raise SourceError(f"source: no dataset {source.name!r} in the catalogue (see `augment datasets`)")
    entry = versions[-1] if wanted == "latest" else next((v for v in versions if v.version == wanted), None)
    if entry is None:
        known = ", ".join(str(v.version) for v in versions)
        raise SourceError(f"source: dataset {source.name!r} has no version {wanted} (versions: {known})")
    source.resolve(entry.version, entry.path)
    return entry
