"""Storage paths and filesystems: a local folder by default, s3:// when configured."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs

from augment_core.settings import Settings


def filesystem_for(uri: str, s3_endpoint_url: str | None = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem and in-filesystem path for a local path or an s3:// URL."""
    if uri.startswith("s3://"):
        bucket_and_key = uri.removeprefix("s3://")
        endpoint = s3_endpoint_url or os.environ.get("AUGMENT_S3_ENDPOINT_URL") or None
        fs = pafs.S3FileSystem(
            endpoint_override=endpoint,
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            scheme="http" if endpoint and endpoint.startswith("http://") else "https",
            allow_bucket_creation=True,
        )
        return fs, bucket_and_key
    if "://" in uri:
        raise ValueError(f"unsupported storage URL {uri!r}: use a local path or s3://")
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def seal(uri: str) -> None:
    """Make a written local dataset folder read-only (files 0444, folders 0555), so that no
    process of ours or a user's overwrites a catalogued version. Object storage has no modes:
    there the catalogue check (MetadataStore.refuse_catalogued) is the guard."""
    if "://" in uri:
        return
    root = Path(uri)
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(folder, 0o555)


class StoragePaths:
    """Where a run's outputs go under the storage root."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.storage_root
        self.s3_endpoint_url = settings.s3_endpoint_url

    def dataset_run(self, dataset: str, run_id: str) -> str:
        return join(self.root, "datasets", dataset, f"run-{run_id}")

    def quarantine(self, dataset: str, run_id: str) -> str:
        return join(self.root, "quarantine", dataset, f"run-{run_id}")

    def run_log(self, run_id: str) -> str:
        """A failed run's full error, traceback and all (its row holds the one-line reason)."""
        return join(self.root, "runs", run_id, "error.log")

    def export_csv(self, dataset: str, version: int) -> str:
        return join(self.root, "exports", dataset, f"v{version}.csv")

    def filesystem(self, uri: str) -> tuple[pafs.FileSystem, str]:
        return filesystem_for(uri, self.s3_endpoint_url)

    def read_filesystem(self, uri: str) -> pafs.FileSystem | None:
        """The filesystem Ray Data reads `uri` with: ours for s3:// (the configured endpoint and
        region), None for a local path (Ray Data's own choice)."""
        return self.filesystem(uri)[0] if uri.startswith("s3://") else None
