"""Fixtures shared by the integration tests: the sample workflow's batch run, made once."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from actors.runs import start_run
from augment_core.settings import Settings
from augment_core.store import RunRecord, open_store
from pipelines.spec import load_spec
from tests.conftest import SAMPLE_SPEC


def run_spec(settings: Settings, spec_path: Path) -> RunRecord:
    """Run a workflow on the session cluster and return its final stored record."""
    spec = load_spec(spec_path)
    run_id, (_, final) = start_run(settings, spec, str(spec_path))
    ray.get(final, timeout=300)
    return open_store(settings).get_run(run_id)


@pytest.fixture(scope="session")
def sample_run(ray_cluster, settings: Settings) -> RunRecord:
    return run_spec(settings, SAMPLE_SPEC)
