"""Fixtures shared by the integration tests: the sample workflow's batch run, made once."""

from __future__ import annotations

import contextlib
import csv
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from actors.naming import NAMESPACE, limiter_name
from actors.runs import start_run
from augment_core.settings import Settings
from augment_core.store import RunRecord, open_store
from pipelines.workflows.loader import load_spec
from tests.conftest import SAMPLE_SPEC
from tests.integration.serving import (  # noqa: F401 - session fixtures of the Serve deployment
    admin_key,
    base_url,
    client,
    serve_config,
    signed_in,
    stored_run,
    workflows_dir,
)


def company_llm_spec(
    folder: Path, provider_url: str, records: int, prefix: str, *, limits: dict[str, Any] | None = None,
    sink: dict[str, Any] | None = None, name_suffix: dict[int, str] | None = None, extra_rows: list[list[str]] = (),
) -> Path:
    """A workflow with one llm step ("profile" -> summary) over `records` companies r0..rN-1, against
    a provider at `provider_url` on an account of its own; `name_suffix` adds fault markers to names."""
    data = folder / "in.csv"
    with data.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name"])
        writer.writerows([f"r{i}", f"Company {i}" + (name_suffix or {}).get(i, "")] for i in range(records))
        writer.writerows(extra_rows)
    name = f"{prefix}_{uuid.uuid4().hex[:6]}"
    spec = {
        "name": name,
        "providers": {"fake": {"kind": "openai", "base_url": provider_url, "allow_hosts": ["127.0.0.1"], "model": "m",
                               "account": name,
                               "limits": limits or {}}},
        "source": {"kind": "csv", "path": str(data)},
        "schema": {"key": "id", "fields": {"id": {"required": True}, "name": {}}},
        "steps": [{"use": "llm", "name": "profile", "params": {
            "provider": "fake", "user": "About {{name}}", "outputs": {"summary": {}}}}],
        "sink": {"dataset": name, **(sink or {})},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def run_spec(settings: Settings, spec_path: Path) -> RunRecord:
    """Run a workflow on the session cluster and return its final stored record."""
    spec = load_spec(spec_path)
    run_id, (_, final) = start_run(settings, spec, str(spec_path))
    ray.get(final, timeout=300)
    return open_store(settings).get_run(run_id)


@pytest.fixture(scope="module", autouse=True)
def limiters_end_with_their_module() -> Iterator[None]:
    """Each test names provider accounts of its own, and each account's limiter is a detached actor
    (a process of ~200 MB) that outlives its runs by design: kept for the whole suite, they crowded
    a 2-core node until runs timed out. The limiters a module started go when it ends."""
    before = _limiters()
    yield
    for name in _limiters() - before:
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)


def _limiters() -> set[str]:
    if not ray.is_initialized():
        return set()
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == NAMESPACE and a["name"].startswith(limiter_name(""))}


@pytest.fixture(scope="session")
def sample_run(ray_cluster, settings: Settings) -> RunRecord:
    return run_spec(settings, SAMPLE_SPEC)
