"""Unit tests run without Ray: a test that starts it belongs under tests/integration."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


def _ray_up() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@pytest.fixture(autouse=True)
def no_ray_started() -> Iterator[None]:
    # In a whole-suite run the integration tests' session cluster may be joined already: only a
    # test that starts Ray itself is wrong here.
    before = _ray_up()
    yield
    if not before and _ray_up():
        sys.modules["ray"].shutdown()
        pytest.fail("this test started Ray: tests that need Ray go under tests/integration")


@pytest.fixture(autouse=True)
def no_cluster_in_sight(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a whole-suite run the session cluster is joined already; unit tests see the world of
    `make test-unit` all the same (no cluster: the gateway counts in-process, starting a run
    answers 503), not one that depends on which tests ran before them."""
    if _ray_up():
        monkeypatch.setattr(sys.modules["ray"], "is_initialized", lambda: False)
