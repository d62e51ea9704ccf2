"""Every version of every workflow, kept in the metadata store: its YAML exactly as saved, who
saved it and when. A workflow's number is its spec's own `version:` field, which runs record, so a
run's `workflow_version` finds the text it ran. The workflows folder holds each workflow's current
text (what `augment run`, the API and the panels read); saving in the workflow editor writes the
next number into both. The folder is imported as it is found (pipelines/workflows/editing.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib

import sqlalchemy as sa
from pydantic import BaseModel

from augment_core.store import MetadataStore, aware, utcnow, workflow_versions_table

FOLDER_AUTHOR = "the workflows folder"  # a version found in the folder, not saved through augment


class WorkflowVersion(BaseModel):
    workflow: str
    version: int
    file: str
    text: str
    sha256: str
    author: str
    created_at: dt.datetime


class VersionTaken(Exception):
    """That version of the workflow is already kept, with other text."""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class WorkflowHistory:
    def __init__(self, store: MetadataStore) -> None:
        self.engine = store.engine

    def versions(self, workflow: str) -> list[WorkflowVersion]:
        """Newest first."""
        query = (workflow_versions_table.select().where(workflow_versions_table.c.workflow == workflow)
                 .order_by(workflow_versions_table.c.version.desc()))
        with self.engine.connect() as conn:
            return [_version(r) for r in conn.execute(query).mappings()]

    def get(self, workflow: str, version: int) -> WorkflowVersion | None:
        table = workflow_versions_table
        query = table.select().where(table.c.workflow == workflow, table.c.version == version)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _version(row) if row is not None else None

    def latest_number(self, workflow: str) -> int:
        table = workflow_versions_table
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(sa.func.max(table.c.version)).where(table.c.workflow == workflow)).scalar()
        return int(found or 0)

    def keep(self, workflow: str, version: int, file: str, text: str, author: str) -> WorkflowVersion:
        """Keep this text as the version; the same text again is a no-op, other text VersionTaken."""
        digest = sha256(text)
        existing = self.get(workflow, version)
        if existing is not None:
            if existing.sha256 != digest:
                raise VersionTaken(f"version {version} of workflow {workflow!r} is already kept with other text"
                                   f" (saved by {existing.author})")
            return existing
        row = {"workflow": workflow, "version": version, "file": file, "text": text, "sha256": digest,
               "author": author[:200], "created_at": utcnow()}
        try:
            with self.engine.begin() as conn:
                conn.execute(workflow_versions_table.insert().values(**row))
        except sa.exc.IntegrityError:  # saved at the same moment by someone else
            return self.keep(workflow, version, file, text, author)
        return WorkflowVersion(**row)


def _version(row: sa.RowMapping) -> WorkflowVersion:
    values = dict(row)
    values["created_at"] = aware(values["created_at"])
    return WorkflowVersion(**values)
