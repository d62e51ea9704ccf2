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
