"""The online layer on the session cluster: configs/serve.yaml deployed under /augment through the
dashboard's Serve REST API, then used the way a client and a browser would use it."""

from __future__ import annotations

import copy
import csv
import json
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic_core import to_jsonable_python

from augment_core.serve_routes import API_IMPORT_PATH
from augment_core.settings import Settings
from augment_core.store import open_store
from pipelines.engine.inprocess import InProcessEngine
from pipelines.workflows.loader import load_spec
from serve_apps import deploy
from tests.conftest import SAMPLE_CSV, SAMPLE_SPEC, TEST_SERVE_PORT
from tests.integration.serving import DASHBOARD, PREFIX, launch_chromium, require_chromium, sign_in


def test_strangers_get_nothing_but_health(base_url: str, admin_key: str) -> None:
    origin = f"http://127.0.0.1:{TEST_SERVE_PORT}"
    with httpx.Client(timeout=60, follow_redirects=False) as http:
        assert http.get(f"{base_url}/api/v1/health").json() == {"status": "ok", "store": "ok"}
        for path in ("/api/v1/runs", "/api/v1/workflows", "/api/docs", "/api/openapi.json", "/api/v1/audit"):
            assert http.get(f"{base_url}{path}").status_code == 401, path
        assert http.post(f"{base_url}/api/v1/runs/x/cancel").status_code == 401
        for page in ("/", "/ui/runs/"):
            answer = http.get(f"{origin}{PREFIX}{page}", headers={"accept": "text/html"})
            assert answer.status_code == 303 and answer.headers["location"].startswith(f"{PREFIX}/login?next=")
        assert http.get(f"{base_url}/ui/runs/config").status_code == 401
        assert http.get(f"{base_url}/api/v1/runs", headers={"host": "evil.example"}).status_code == 400
        assert http.get(f"{base_url}/api/v1/me", headers={"Authorization": f"Bearer {admin_key}x"}).status_code == 401


def _org(org_id: str, **values: object) -> dict[str, object]:
    return {"org_id": org_id, "name": "Acme Ltd", **values}


# health, workflows, runs ------------------------------------------------------------------------
def test_health_checks_the_store_and_says_nothing_more(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "store": "ok"}


def test_workflows_are_listed_with_broken_specs_and_their_errors(client: httpx.Client) -> None:
    response = client.get("/workflows")
    assert response.status_code == 200, response.text
    listed = {w["name"]: w for w in response.json()}
    assert set(listed) == {"organisations", "broken"}

    sample = listed["organisations"]
    assert sample["usable"] and sample["errors"] == []
    assert sample["version"] == 1 and sample["description"]
    assert sample["fields"]["org_id"] == {"type": "string", "required": True, "regex": "ORG-\\d{5}"}
    assert [s["use"] for s in sample["steps"]][:2] == ["clean_company_name", "normalize_url"]
    assert sample["sink"] == {"dataset": "organisations_enriched", "export_csv": True}

    broken = listed["broken"]
    assert broken["usable"] is False and broken["file"] == "broken.yaml"
    assert "sink.export: unknown key" in broken["errors"]


def test_runs_are_listed_and_read_one_by_one(client: httpx.Client, stored_run: str) -> None:
    listed = client.get("/runs", params={"workflow": "organisations", "limit": 200})
    assert listed.status_code == 200, listed.text
    assert stored_run in [r["id"] for r in listed.json()]

    run = client.get(f"/runs/{stored_run}").json()
    assert run["status"] == "failed" and run["error"] == "write failed: disk full"
    assert run["counts"]["in"] == run["counts"]["valid"] + run["counts"]["quarantined"] == 12
    assert [(s["name"], s["state"], s["rows"]) for s in run["steps"]] == [
        ("validate", "succeeded", 12), ("normalize_url_1", "succeeded", 10), ("write", "failed", 0)
    ]
    assert run["steps"][2]["error"] == "disk full"
    assert run["output"]["version"] == 3 and run["duration_seconds"] is not None


def test_unknown_run_and_bad_limit(client: httpx.Client) -> None:
    missing = client.get("/runs/no-such-run")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no run 'no-such-run'"
    bad = client.get("/runs", params={"limit": 0})
    assert bad.status_code == 422
    assert [e["path"] for e in bad.json()["detail"]] == ["query.limit"]


# online augment --------------------------------------------------------------------------------
def test_augment_returns_what_the_online_workflow_returns(client: httpx.Client) -> None:
    records = [
        _org("ORG-10001", website="https://www.Acme.co.uk/", country="UK", employees="1200",
             email="Info@Acme.co.uk", phone="020 7946 0000"),
        _org("ORG-10002", name="Globex Corporation", website="globex.com", country="United States", employees=40),
    ]
    response = client.post("/workflows/organisations/augment", json={"records": records})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["workflow"] == "organisations" and body["version"] == 1
    assert body["counts"] == {"in": 2, "valid": 2, "quarantined": 0} and body["invalid"] == []

    acme, globex = body["records"]
    assert acme["website_domain"] == "acme.co.uk" and acme["country_code"] == "GB"
    assert acme["org_id"] == "ORG-10001" and acme["employees"] == 1200 and acme["size_band"] == "large"
    assert globex["country_code"] == "US" and globex["size_band"] == "small"

    expected = InProcessEngine(load_spec(SAMPLE_SPEC)).augment(records).records
    assert body["records"] == to_jsonable_python(expected)


def test_the_whole_sample_file_round_trips(client: httpx.Client) -> None:
    rows = list(csv.DictReader(SAMPLE_CSV.open(encoding="utf-8")))[:1000]
    response = client.post("/workflows/organisations/augment", json={"records": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = InProcessEngine(load_spec(SAMPLE_SPEC)).augment(rows)
    assert body["records"] == to_jsonable_python(expected.records)
    assert body["invalid"] == expected.invalid
    assert body["counts"]["in"] == body["counts"]["valid"] + body["counts"]["quarantined"] == len(rows)


def test_invalid_records_come_back_one_by_one_with_reasons(client: httpx.Client) -> None:
    records = [
        _org("ORG-20001", website="acme.com"),
        {"org_id": "ORG-20002", "name": "", "employees": "lots"},
        "not an object",
        [1, 2],
        _org("ORG-20001", name="Acme again"),
        {"org_id": "bad id", "name": "Initech"},
        _org("ORG-20003", email="not-an-email"),
    ]
    response = client.post("/workflows/organisations/augment", json={"records": records})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["counts"] == {"in": 7, "valid": 1, "quarantined": 6}
    assert len(body["records"]) + len(body["invalid"]) == len(records)
    assert [r["org_id"] for r in body["records"]] == ["ORG-20001"]

    invalid = {item["index"]: item["errors"] for item in body["invalid"]}
    assert sorted(invalid) == [1, 2, 3, 4, 5, 6]
    assert {e["field"] for e in invalid[1]} == {"name", "employees"}
    assert invalid[2] == [{"field": "(record)", "reason": "expected a JSON object, got str"}]
    assert invalid[3] == [{"field": "(record)", "reason": "expected a JSON object, got list"}]
    assert "first seen at row 1 of request" in invalid[4][0]["reason"]
    assert [e["field"] for e in invalid[5]] == ["org_id"]
    assert [e["field"] for e in invalid[6]] == ["email"]
    assert all(e["reason"] for errors in invalid.values() for e in errors)


@pytest.mark.parametrize(
    ("content", "paths"),
    [
        pytest.param(b'{"records": [{"org_id": ', ["body"], id="malformed-json"),
        pytest.param(b'{"records": ["\xff"]}', ["body"], id="not-utf8"),
        pytest.param(b"{}", ["body.records"], id="missing-records"),
        pytest.param(b'{"records": {"org_id": "ORG-00001"}}', ["body.records"], id="records-not-a-list"),
        pytest.param(b'{"records": []}', ["body.records"], id="no-records"),
        pytest.param(b'{"records": [{}], "dry_run": true}', ["body.dry_run"], id="extra-key"),
        pytest.param(b'[{"org_id": "ORG-00001"}]', ["body"], id="body-not-an-object"),
        pytest.param(json.dumps({"records": [{}] * 1001}).encode(), ["body.records"], id="too-many-records"),
    ],
)
def test_malformed_requests_are_422_with_every_error_path(
    client: httpx.Client, content: bytes, paths: list[str]
) -> None:
    response = client.post(
        "/workflows/organisations/augment", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [e["path"] for e in detail] == paths
    assert all(set(e) == {"loc", "path", "msg", "type"} for e in detail)  # the input is not echoed back


def test_a_body_without_json_content_type_is_422_with_a_hint(client: httpx.Client) -> None:
    response = client.post("/workflows/organisations/augment", content=b'{"records": [{}]}',
                           headers={"content-type": "text/plain"})
    assert response.status_code == 422
    assert "Content-Type: application/json" in response.json()["detail"][0]["msg"]


def test_unknown_and_broken_workflows(client: httpx.Client) -> None:
    unknown = client.post("/workflows/nope/augment", json={"records": [{}]})
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "no workflow named 'nope'"
    broken = client.post("/workflows/broken/augment", json={"records": [{}]})
    assert broken.status_code == 409
    assert "sink.export: unknown key" in broken.json()["detail"]["errors"]


def test_an_edited_spec_is_picked_up_without_redeploying(client: httpx.Client, workflows_dir: Path) -> None:
    spec = workflows_dir / "edited.yaml"
    text = "name: edited\nversion: {v}\nsource: {{kind: csv, path: x.csv}}\n" \
           "schema: {{fields: {{id: {{type: string}}}}}}\nsink: {{dataset: edited}}\n"
    spec.write_text(text.format(v=1), encoding="utf-8")
    assert client.post("/workflows/edited/augment", json={"records": [{"id": "a"}]}).json()["version"] == 1
    spec.write_text(text.format(v=2), encoding="utf-8")
    stat = spec.stat()
    os.utime(spec, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert client.post("/workflows/edited/augment", json={"records": [{"id": "a"}]}).json()["version"] == 2
    spec.unlink()
    assert client.post("/workflows/edited/augment", json={"records": [{"id": "a"}]}).status_code == 404


# shell and panel -------------------------------------------------------------------------------
LLM_SPEC = """\
name: profiled
source: {{kind: csv, path: unused.csv}}
providers:
  fake:
    kind: openai
    base_url: {base_url}
    allow_hosts: [127.0.0.1]
    model: fake-small
    account: serve_llm_test
    limits: {{requests_per_minute: 600, max_in_flight: 16}}
    prices: {{input_per_million: 1.0, output_per_million: 2.0}}
schema:
  key: id
  fields:
    id: {{type: string, required: true}}
    name: {{type: string, required: true}}
steps:
  - use: llm
    name: profile
    params:
      provider: fake
      user: "Classify {{{{name}}}}"
      outputs:
        industry: {{enum: [software, retail, other]}}
sink: {{dataset: profiled}}
"""


def test_online_llm_calls_from_parallel_clients_share_the_cluster_limiter(
    client: httpx.Client, workflows_dir: Path
) -> None:
    """Requests to the deployed API call the provider through the account's ProviderLimiter
    actor: parallel clients together stay within the provider's per-second window."""
    import ray

    from devtools.fake_openai import FakeOpenAI

    with FakeOpenAI(rpm=600, latency_ms=(20, 80)) as fake:
        path = workflows_dir / "profiled.yaml"
        path.write_text(LLM_SPEC.format(base_url=fake.base_url), encoding="utf-8")
        try:
            chunks = [[{"id": f"r{c}-{i}", "name": f"Company {c}-{i}"} for i in range(20)] for c in range(3)]

            def post(records: list[dict[str, str]]) -> httpx.Response:
                with httpx.Client(base_url=str(client.base_url), timeout=120, headers=client.headers) as http:
                    return http.post("/workflows/profiled/augment", json={"records": records})

            with ThreadPoolExecutor(len(chunks)) as pool:
                replies = list(pool.map(post, chunks))
        finally:
            path.unlink()
        stats = fake.stats()
    assert [r.status_code for r in replies] == [200, 200, 200], [r.text[:300] for r in replies]
    records = [record for r in replies for record in r.json()["records"]]
    assert len(records) == 60
    assert {r["profile_status"] for r in records} == {"ok"}
    assert {r["industry"] for r in records} <= {"software", "retail", "other"}
    provenances = [json.loads(r["profile_provenance"]) for r in records]
    assert {(p["provider"], p["model"]) for p in provenances} == {("fake", "fake-small")}
    # Paced at 0.98 of the window, the calls meet a 429 only when a loaded node delays a granted
    # call into the next second (one in CI); unpaced, 60 calls at once would draw about 50.
    assert stats["by_status"]["200"] == 60 and stats["rate_limited"] <= 2, stats["by_status"]
    assert sum(p["attempts"] for p in provenances) == 60 + stats["rate_limited"]
    assert max(stats["admitted_per_second"].values()) <= 10
    limiter = ray.get_actor("limiter-serve_llm_test", namespace="augment")
    assert ray.get(limiter.snapshot.remote())["granted"] >= 60


def test_run_events_stream_through_serve_live_and_resume_after_the_last_event_seen(
        client: httpx.Client, settings: Settings) -> None:
    """Server-sent events pass Serve's proxy unbuffered: a live event arrives while the stream is
    open, and a reconnect with Last-Event-ID gets exactly what came after it."""
    from augment_core.events import open_bus

    store, bus = open_store(settings), open_bus(settings)
    run_id = f"test-sse-{uuid.uuid4().hex[:8]}"
    store.create_run(run_id, "organisations", 1, str(SAMPLE_SPEC), ["validate", "write"])
    bus.publish(run_id, "run.started", {"workflow": "organisations"})

    def read_all(headers: dict[str, str]) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        with client.stream("GET", f"/runs/{run_id}/events", headers=headers, timeout=60) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            frame: dict[str, str] = {}
            for line in response.iter_lines():
                if line.startswith(("id:", "event:")):
                    key, _, value = line.partition(":")
                    frame[key] = value.strip()
                elif not line and frame:
                    seen.append((frame["id"], frame["event"]))
                    frame = {}
        return seen

    with ThreadPoolExecutor(1) as pool:
        live = pool.submit(read_all, {})
        time.sleep(2)  # the stream is open and waiting
        assert not live.done()
        bus.publish(run_id, "step.progress", {"steps": {"validate": {"state": "running", "rows": 3}}})
        store.finish_run(run_id, "succeeded")
        bus.publish(run_id, "run.finished", {"status": "succeeded"})
        assert live.result(timeout=60) == [("1", "run.started"), ("2", "step.progress"), ("3", "run.finished")]
    assert read_all({"Last-Event-ID": "1"}) == [("2", "step.progress"), ("3", "run.finished")]
    assert client.get("/runs/no-such-run/events").status_code == 404


def test_cross_site_forms_with_the_session_cookie_are_refused(base_url: str, signed_in: dict[str, str]) -> None:
    """What a page of another site could make a browser send with our cookie (a form: no custom
    header), to a panel, to the API and to logout, is refused; with the session's token a change
    to a panel goes through."""
    origin = f"http://127.0.0.1:{TEST_SERVE_PORT}"
    with httpx.Client(timeout=60, follow_redirects=False) as http:
        sign_in(http, base_url, signed_in)
        csrf = http.get(f"{base_url}/session").json()["csrf_token"]
        join = f"{base_url}/ui/runs/gradio_api/queue/join"
        form = {"data": "[]", "fn_index": "0", "session_hash": "x"}
        for headers in ({"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"}, {"origin": origin}):
            assert http.post(join, data=form, headers=headers).status_code == 403, headers
            cancel = http.post(f"{base_url}/api/v1/runs/x/cancel", data=form, headers=headers)
            assert cancel.status_code == 403, headers
            assert http.post(f"{base_url}/logout", data={}, headers=headers).status_code == 403, headers
        foreign = {"origin": "https://evil.example", "x-csrf-token": csrf}
        assert http.post(join, data=form, headers=foreign).status_code == 403
        body = {"data": [None], "fn_index": 0, "session_hash": "x", "event_data": None, "trigger_id": None}
        joined = http.post(join, json=body, headers={"origin": origin, "x-csrf-token": csrf})
        assert joined.status_code == 200 and "event_id" in joined.json(), joined.text
        assert http.get(f"{base_url}/session").status_code == 200  # none of it signed the user out


def test_a_browser_signs_in_uses_the_shell_and_the_runs_panel_and_signs_out(
        base_url: str, stored_run: str, signed_in: dict[str, str]) -> None:
    """Headless Chromium: the login page (a wrong password shown as an error), then the shell and the
    runs panel, two Serve applications under one session; the panel's Gradio actions carry the
    session's CSRF token (PageGuard refuses them otherwise). Signing out on the shell ends the session
    for both. AUGMENT_SCREENSHOTS=DIR saves what the browser saw there as PNGs."""
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ["AUGMENT_SCREENSHOTS"]) if os.environ.get("AUGMENT_SCREENSHOTS") else None

    def shoot(page: Any, name: str) -> None:
        if shots is not None:
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(f"{base_url}/ui/runs/")  # sent to the login page, and back once signed in
            expect(page.locator("h1")).to_have_text("Sign in to augment")
            page.fill("#username", signed_in["username"])
            page.fill("#password", "not the password")
            page.click("button[type=submit]")
            expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
            shoot(page, "login-error")
            page.fill("#username", signed_in["username"])
            page.fill("#password", signed_in["password"])
            page.click("button[type=submit]")
            page.wait_for_url(f"{base_url}/ui/runs/**")
            row = page.locator("#runs-table").get_by_role("row").filter(has_text=stored_run).locator("visible=true")
            expect(row).to_be_visible(timeout=30_000)
            expect(row).to_contain_text("failed")
            expect(page.locator("#runs-status")).to_contain_text("most recent run")

            csrf = context.request.get(f"{base_url}/session").json()["csrf_token"]
            with page.expect_response(lambda r: "/gradio_api/queue/join" in r.url) as joined:
                row.get_by_text(stored_run, exact=True).click()
            assert joined.value.status == 200
            assert joined.value.request.headers.get("x-csrf-token") == csrf
            steps = page.locator("#run-steps")
            expect(steps).to_contain_text("normalize_url_1", timeout=15_000)
            expect(steps).to_contain_text("disk full")
            detail = page.locator("#run-detail")
            expect(detail).to_contain_text(f"Run {stored_run} — failed")
            expect(detail).to_contain_text("write failed: disk full")
            expect(detail).to_contain_text("organisations_enriched v3")
            shoot(page, "runs-panel")

            shell = context.new_page()
            shell.goto(f"{base_url}/")
            expect(shell.locator("#user")).to_contain_text(f"{signed_in['username']} · operator")
            expect(shell.locator("#panels")).to_contain_text("Runs")
            shoot(shell, "shell")
            shell.get_by_role("button", name="Sign out").click()
            shell.wait_for_url(f"{base_url}/login")
            for url in (f"{base_url}/", f"{base_url}/ui/runs/"):
                shell.goto(url)
                expect(shell.locator("h1")).to_have_text("Sign in to augment")
                assert shell.url.startswith(f"{base_url}/login?next="), shell.url
            # the panel still open in the first tab: its next action is refused
            with page.expect_response(lambda r: "/gradio_api/queue/join" in r.url) as refused:
                page.get_by_role("button", name="Refresh").click()
            assert refused.value.status == 401
        finally:
            browser.close()


class TestTwoApiReplicas:
    """A second API application at two replicas (the module's `api` stays as it is), each answering
    which replica it is (X-Augment-Replica); its callers may burst BURST requests, and a
    replica trusts a key it checked for one second."""

    BURST = 5
    ENV = {"AUGMENT_API_BURST": str(BURST), "AUGMENT_AUTH_CACHE_SECONDS": "1"}

    @pytest.fixture(scope="class")
    def replicated(self, base_url: str, serve_config: dict[str, Any]) -> Iterator[str]:
        config = copy.deepcopy(serve_config)
        config["applications"].insert(0, {
            "name": "api-replicated", "route_prefix": f"{PREFIX}/replicated", "import_path": API_IMPORT_PATH,
            "args": {"replica_header": True}, "runtime_env": {"env_vars": self.ENV},
            "deployments": [{"name": "AugmentApi", "num_replicas": 2, "max_ongoing_requests": 32,
                             "ray_actor_options": {"num_cpus": 0.1}}],
        })
        deploy.validate_config(config)
        deploy.deploy(DASHBOARD, config)
        try:
            yield f"http://127.0.0.1:{TEST_SERVE_PORT}{PREFIX}/replicated/v1"
        finally:
            deploy.deploy(DASHBOARD, serve_config)  # the module's applications only, as before

    @staticmethod
    def key(settings: Settings, rate_per_minute: int | None = None) -> tuple[str, str]:
        from augment_core.identity import Identity, Role

        identity = Identity(open_store(settings))
        user = identity.create_user(f"replicas-{uuid.uuid4().hex[:6]}", Role.viewer, None)
        key, secret = identity.create_key(user.name, "replicas", rate_per_minute=rate_per_minute)
        return key.prefix, secret

    @staticmethod
    def ask(http: httpx.Client, url: str) -> tuple[str, httpx.Response]:
        answer = http.get(f"{url}/me")
        return answer.headers["x-augment-replica"], answer

    def test_a_revoked_key_stops_working_on_every_replica(self, replicated: str, settings: Settings) -> None:
        from augment_core.identity import Identity

        prefix, secret = self.key(settings)
        with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {secret}"}) as http:
            served: set[str] = set()
            for _ in range(200):  # until both replicas have checked the key (and hold it in their caches)
                replica, answer = self.ask(http, replicated)
                assert answer.status_code == 200, answer.text
                served.add(replica)
                if len(served) == 2:
                    break
            assert len(served) == 2, "every request went to one replica"
            Identity(open_store(settings)).revoke_key(prefix)  # as `augment keys revoke` does
            refused: set[str] = set()
            deadline = time.monotonic() + 60
            while refused != served and time.monotonic() < deadline:
                replica, answer = self.ask(http, replicated)
                if answer.status_code == 401:
                    refused.add(replica)
                else:  # within the replica's cache time; never again once it has refused
                    assert answer.status_code == 200 and replica not in refused, (replica, answer.status_code)
            assert refused == served, f"still honoured by {served - refused}"
            after = [self.ask(http, replicated) for _ in range(20)]
            assert {answer.status_code for _, answer in after} == {401}

    def test_two_replicas_share_one_rate_limit(self, replicated: str, settings: Settings) -> None:
        """A key of 1 request a minute may burst BURST requests: BURST in all, not BURST per replica."""
        _, secret = self.key(settings, rate_per_minute=1)
        answers: dict[str, list[int]] = {}
        started = time.monotonic()
        with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {secret}"}) as http:
            for _ in range(300):  # until each replica has answered more than a burst
                replica, answer = self.ask(http, replicated)
                assert answer.status_code in (200, 429), answer.text
                if answer.status_code == 429:
                    assert int(answer.headers["retry-after"]) >= 1
                answers.setdefault(replica, []).append(answer.status_code)
                if len(answers) == 2 and all(len(codes) > self.BURST for codes in answers.values()):
                    break
        elapsed = time.monotonic() - started
        assert len(answers) == 2 and all(len(codes) > self.BURST for codes in answers.values()), answers
        admitted = sum(codes.count(200) for codes in answers.values())
        # one more request a minute after the burst; a limit per replica would have let 2 * BURST through
        assert self.BURST <= admitted <= self.BURST + 1 + int(elapsed // 60), answers


def test_runs_at_once_next_to_the_deployed_apps_all_finish(base_url: str, settings: Settings) -> None:
    """Ray Data splits the cluster between the datasets running at once, and each plan's
    operators share their part: tasks asking a whole CPU (Ray's default) never started when
    several runs met the Serve replicas, and the runs waited forever."""
    import ray

    from actors.runs import start_run

    spec = load_spec(SAMPLE_SPEC)
    launched = [start_run(settings, spec, str(SAMPLE_SPEC)) for _ in range(3)]
    ray.get([final for _, (_, final) in launched], timeout=300)
    store = open_store(settings)
    runs = [store.get_run(run_id) for run_id, _ in launched]
    assert [run.status for run in runs] == ["succeeded"] * 3, [run.error for run in runs]
    assert {(run.counts["in"], run.counts["valid"], run.counts["quarantined"]) for run in runs} == {(300, 277, 23)}
    versions = {run.output["version"] for run in runs}
    assert len(versions) == 3  # each catalogued its own version of the dataset


# last in this module: the deployment fixture's own teardown then finds nothing left to stop
def test_serve_stop_removes_every_application(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from augment_cli.main import main

    assert main(["serve", "--stop", "--address", DASHBOARD]) == 0
    assert "Serve applications removed" in capsys.readouterr().out
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/api/v1/health", timeout=10).status_code != 200:
                break
        except httpx.TransportError:
            break
        time.sleep(1)
    else:
        pytest.fail("the API still answers 60 s after `augment serve --stop`")
