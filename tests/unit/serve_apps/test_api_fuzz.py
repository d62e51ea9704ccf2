"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis), in-process and
without Ray: whatever an admin key sends to any route, valid or not, the answer is never a 5xx.

Bounded: FUZZ_EXAMPLES cases per operation (AUGMENT_FUZZ_EXAMPLES overrides, for a longer hunt).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from augment_core.identity import Identity, Role
from augment_core.settings import Settings
from augment_core.store import open_store
from serve_apps.api_v1.app import create_app
from tests.conftest import SAMPLE_SPEC

FUZZ_EXAMPLES = int(os.environ.get("AUGMENT_FUZZ_EXAMPLES", "25"))
RUN_ID = "fuzz-run-1"
# Path parameters that name something that exists, so that some cases get past the 404.
KNOWN = {"name": "organisations", "run_id": RUN_ID}


@pytest.fixture(scope="module")
def admin_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str]:
    home = tmp_path_factory.mktemp("fuzz")
    workflows = home / "workflows"
    workflows.mkdir()
    (workflows / SAMPLE_SPEC.name).symlink_to(SAMPLE_SPEC)  # linked: its relative paths still resolve
    # schemathesis's ASGI client asks for the host "testserver"; the suite's callers send far more
    # than a person would, so the rate limit is out of the way.
    fuzz_settings = Settings(workflows_dir=str(workflows), database_url=f"sqlite:///{home / 'a.db'}",
                             storage_root=str(home / "data"), allowed_hosts="testserver",
                             api_rate_per_minute=1_000_000, api_burst=100_000, stream_idle_seconds=1)
    store = open_store(fuzz_settings)
    store.create_run(RUN_ID, "organisations", 1, str(SAMPLE_SPEC), ["validate", "write"])
    store.finish_run(RUN_ID, "failed", error="disk full")
    identity = Identity(store)
    identity.create_user("fuzzer", Role.admin, None)
    return fuzz_settings, identity.create_key("fuzzer", "schemathesis")[1]


@pytest.fixture  # per test: built after tests/unit/conftest.py hid a whole-suite run's cluster from the gateway
def api_schema(admin_key: tuple[Settings, str]) -> Any:
    fuzz_settings, key = admin_key
    app = create_app(fuzz_settings, 1 << 20)
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Authorization": f"Bearer {key}"})


def test_no_request_makes_the_api_fail(api_schema: Any, admin_key: tuple[Settings, str]) -> None:
    """Each operation gets FUZZ_EXAMPLES cases, valid ones and invalid ones (wrong types, missing or
    extra fields, out-of-range values), some of them about a workflow and a run that exist; every
    5xx is collected and reported at the end."""
    auth = {"Authorization": f"Bearer {admin_key[1]}"}
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10  # the document was read, with the routes in it

    for operation in operations:
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        strategies = [operation.as_strategy(mode) for mode in modes]
        known = {name: KNOWN[name] for name in KNOWN if "{" + name + "}" in operation.path}
        if known and not operation.path.endswith("/events"):
            strategies += [operation.as_strategy(mode, path_parameters=known) for mode in modes]
        cases = st.one_of(*strategies)

        @given(case=cases)
        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def call(case: Any) -> None:
            if case.operation.path.endswith("/events"):
                # A stream stays open until its run finishes or goes idle: ask for one that does not exist.
                case.path_parameters = {**(case.path_parameters or {}), "run_id": "no-such-run"}
            response = case.call(headers=auth)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} query={case.query} body={case.body!r}: "
                                f"{response.status_code} {response.text[:300]}")

        call()
    assert not failures, "\n".join(failures)
