"""The shell and the panel framework on the session's Serve deployment: panels found at run time,
one failing or removed panel leaving the shell and the others working, sessions stuck to one of a
panel's two replicas (browsers and gradio_client), and a run followed live from its events."""

from __future__ import annotations

import copy
import datetime as dt
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from augment_core.audit import list_entries
from augment_core.identity import SESSION_COOKIE, Identity, Role
from augment_core.settings import Settings
from augment_core.store import open_store
from serve_apps.gateway.replica import REPLICA_HEADER
from tests.conftest import TEST_SERVE_PORT
from tests.integration.serving import PREFIX, launch_chromium, redeploy, sign_in

ORIGIN = f"http://127.0.0.1:{TEST_SERVE_PORT}"
SHOTS = Path(os.environ["AUGMENT_SCREENSHOTS"]) if os.environ.get("AUGMENT_SCREENSHOTS") else None


def shoot(page: Any, name: str) -> None:
    """AUGMENT_SCREENSHOTS=DIR keeps what the browser saw as PNGs."""
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def session_of(settings: Settings, user: dict[str, str]) -> tuple[str, str]:
    """A new login session, as the login page makes one (which allows a few a minute per user):
    (its cookie's value, its CSRF token)."""
    token, principal = Identity(open_store(settings)).create_session(user["username"], dt.timedelta(hours=1))
    assert principal.csrf_token
    return token, principal.csrf_token


def signed_in_context(browser: Any, token: str) -> Any:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_cookies([{"name": SESSION_COOKIE, "value": token, "domain": "127.0.0.1", "path": PREFIX,
                          "httpOnly": True, "sameSite": "Lax"}])
    return context


def panels_of(http: httpx.Client, base_url: str) -> dict[str, dict[str, Any]]:
    answer = http.get(f"{base_url}/panels.json")
    assert answer.status_code == 200, answer.text
    return {p["name"]: p for p in answer.json()["panels"]}


def test_the_shell_finds_the_panels_at_run_time_for_the_users_role(
        base_url: str, signed_in: dict[str, str], settings: Settings) -> None:
    with httpx.Client(timeout=60, follow_redirects=True) as http:
        sign_in(http, base_url, signed_in)
        page = http.get(base_url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for link in (f'href="{PREFIX}/api/v1/health"', f'href="{PREFIX}/api/docs"'):
            assert link in page.text
        runs = panels_of(http, base_url)["runs"]
        assert runs["title"] == "Runs" and runs["url"] == f"{PREFIX}/ui/runs" and runs["available"], runs
        assert http.get(f"{ORIGIN}{runs['url']}/").status_code == 200
        assert set(panels_of(http, base_url)) == {"runs", "workflows", "review", "data"}  # no API, shell or admin


def test_sessions_stick_to_one_of_a_panels_two_replicas(
        base_url: str, signed_in: dict[str, str], stored_run: str, settings: Settings) -> None:
    """Gradio's queue lives in one process: 6 browser sessions at once (3 on each replica) and 12
    gradio_client calls all succeed, each session answered by one replica throughout."""
    from gradio_client import Client
    from playwright.sync_api import expect, sync_playwright

    sessions: dict[str, list[tuple[str, str]]] = {}  # replica -> sessions it answers
    with httpx.Client(timeout=60) as http:
        for _ in range(40):
            token, csrf = session_of(settings, signed_in)
            http.cookies.set(SESSION_COOKIE, token)
            replicas = {http.get(f"{base_url}/ui/runs/config").headers[REPLICA_HEADER] for _ in range(3)}
            assert len(replicas) == 1, replicas  # the same session, the same replica
            sessions.setdefault(replicas.pop(), []).append((token, csrf))
            if len(sessions) == 2 and all(len(s) >= 3 for s in sessions.values()):
                break
    assert len(sessions) == 2, f"the panel's sessions all went to one replica: {sessions.keys()}"
    chosen = [(replica, s) for replica, found in sessions.items() for s in found[:3]]

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            pages = []
            for replica, (token, _) in chosen:
                page = signed_in_context(browser, token).new_page()
                seen: set[str] = set()
                page.on("response", lambda r, seen=seen: seen.add(r.headers.get(REPLICA_HEADER.lower(), ""))
                        if "/ui/runs/" in r.url else None)
                page.goto(f"{base_url}/ui/runs/")
                pages.append((replica, page, seen))
            for _, page, _ in pages:  # every page open at once, each with its own queue stream
                row = page.locator("#runs-table").get_by_role("row").filter(has_text=stored_run)
                row.locator("visible=true").get_by_text(stored_run, exact=True).click(timeout=30_000)
            for replica, page, seen in pages:
                expect(page.locator("#run-steps")).to_contain_text("normalize_url_1", timeout=30_000)
                expect(page.locator("#run-detail")).to_contain_text(f"Run {stored_run} — failed")
                assert seen == {replica}, (replica, seen)
        finally:
            browser.close()

    def call(index: int) -> tuple[str, Any]:
        _, (token, csrf) = chosen[index % len(chosen)]
        client = Client(f"{base_url}/ui/runs/", verbose=False, download_files=False,
                        headers={"Cookie": f"{SESSION_COOKIE}={token}", "X-CSRF-Token": csrf, "Origin": ORIGIN})
        if index % 2:
            return "watch", client.predict(stored_run, api_name="/watch_run")
        return "list", client.predict(None, "organisations", "failed", "any time", api_name="/list_runs")

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(call, range(12)))
    for kind, answer in answers:
        if kind == "watch":
            summary, steps, _failures = answer
            assert f"Run `{stored_run}` — **failed**" in summary
            assert [row[0] for row in steps["data"]] == ["validate", "normalize_url_1", "write"]
        else:
            message, table, _choice = answer
            assert "matching the filters" in message and stored_run in [row[0] for row in table["data"]]


def test_a_run_is_followed_live_cancelled_and_resumed_from_the_panel(
        base_url: str, signed_in: dict[str, str], settings: Settings, tmp_path: Path) -> None:
    """A run opened by a deep link, its steps and rows pushed to the page from its events (the
    page's only timer refreshes the list, never the run); an operator cancels it and resumes it,
    each confirmed first and its outcome shown, and watches it succeed with its failed record."""
    import ray
    from playwright.sync_api import expect, sync_playwright

    from actors.runs import start_run
    from devtools.fake_openai import FakeOpenAI
    from pipelines.workflows.loader import load_spec
    from tests.integration.conftest import company_llm_spec

    token, _ = session_of(settings, signed_in)
    with FakeOpenAI() as fake, sync_playwright() as playwright:
        # 24 records at 2 requests a second, in batches of 4: the run is live for a while, and its
        # rows arrive batch by batch (a rate); record 5 is refused (400)
        spec_path = company_llm_spec(tmp_path, fake.base_url, 24, "live", limits={"requests_per_minute": 120},
                                     name_suffix={5: " #400"}, sink={"batch_rows": 4})
        run_id, (_, final) = start_run(settings, load_spec(spec_path), str(spec_path))
        browser = launch_chromium(playwright)
        try:
            page = signed_in_context(browser, token).new_page()
            page.goto(f"{base_url}/ui/runs/?run={run_id}")
            detail = page.locator("#run-detail")
            expect(detail).to_contain_text(f"Run {run_id} — running", timeout=60_000)
            expect(detail).to_contain_text("rows/s", timeout=60_000)
            shoot(page, "runs-live")

            confirm, outcome = page.locator("#run-confirm"), page.locator("#run-action-outcome")
            page.click("#run-cancel")
            expect(confirm).to_contain_text(f"Cancel run {run_id}?")
            page.click("#run-confirm-yes")
            expect(outcome).to_contain_text(f"Run {run_id} cancelled: now cancelled", timeout=60_000)
            expect(confirm).to_be_hidden()
            expect(detail).to_contain_text(f"Run {run_id} — cancelled", timeout=30_000)
            with pytest.raises(ray.exceptions.RayActorError):  # the coordinator is gone, and its work
                ray.get(final, timeout=60)
            assert open_store(settings).get_run(run_id).status == "cancelled"
            page.click("#run-open-output")  # what it wrote so far; read again when the resumed run ends
            output = page.locator("#run-output")
            expect(output).to_contain_text(re.compile(r"no version yet \(the run is cancelled\): written so far"))

            page.click("#run-resume")
            expect(confirm).to_contain_text(f"Resume run {run_id}?")
            page.click("#run-confirm-yes")
            expect(outcome).to_contain_text(f"Run {run_id} resumed", timeout=60_000)
            expect(detail).to_contain_text(f"Run {run_id} — succeeded", timeout=180_000)
            failures = page.locator("#run-failures")
            expect(failures).to_contain_text("profile", timeout=15_000)
            expect(failures).to_contain_text("400")
            expect(detail).to_contain_text("failed 1")
            expect(output).to_contain_text(re.compile(r"Output \S+ v1: all 24 row\(s\)"), timeout=30_000)
            expect(output.get_by_role("columnheader", name="summary")).to_be_visible()  # the llm step's column
            expect(output.get_by_role("row").filter(has_text="Company ").first).to_be_visible()
            shoot(page, "runs-finished")

            # its provider account beside the others: the limiter now, and what today's runs did with it
            account = open_store(settings).get_run(run_id).workflow  # company_llm_spec: an account of its own
            page.get_by_text("Provider health").click()
            page.locator("#providers-table").scroll_into_view_if_needed()
            # the suite leaves many accounts on its cluster: the table scrolls (only rows in view are drawn)
            page.locator("#providers-table input.search-input").fill(account)
            row = page.locator("#providers-table tr", has_text=account)
            expect(row).to_contain_text("120 req/min", timeout=30_000)
            expect(row).to_contain_text(re.compile(r"\d+% \(\d+ of \d+\)"))  # the cache's share of the answers
            expect(row).to_contain_text("(1 run(s))")
            shoot(page, "runs-provider-health")
        finally:
            browser.close()
    operator = f"{signed_in['username']} (session)"
    actions = [(e.actor, e.action, e.outcome) for e in list_entries(open_store(settings), actor=operator)
               if e.target == run_id]
    assert (operator, "run.cancel", "ok") in actions and (operator, "run.resume", "ok") in actions


def test_panels_come_and_go_without_touching_the_shell_or_the_others(
        base_url: str, serve_config: dict[str, Any], signed_in: dict[str, str], settings: Settings) -> None:
    """A panel application deployed while a browser has the shell open appears in its navigation;
    removed, it is shown as unavailable, and the shell and the runs panel keep working. An admin-only
    panel is not listed to an operator."""
    from playwright.sync_api import expect, sync_playwright

    extra = copy.deepcopy(serve_config)
    runs = next(app for app in extra["applications"] if app["name"] == "runs")
    spare = {**copy.deepcopy(runs), "name": "spare", "route_prefix": f"{PREFIX}/ui/spare",
             "args": {**runs["args"], "route": "/ui/spare", "title": "Spare runs"}}
    spare["deployments"][0]["num_replicas"] = 1
    extra["applications"].insert(1, spare)
    admin_only = {**copy.deepcopy(spare), "name": "vault", "route_prefix": f"{PREFIX}/ui/vault",
                  "args": {**spare["args"], "route": "/ui/vault", "title": "Vault", "role": "admin"}}
    extra["applications"].insert(1, admin_only)
    admin = f"admin-{uuid.uuid4().hex[:6]}"
    Identity(open_store(settings)).create_user(admin, Role.admin, "a long password")

    token, _ = session_of(settings, signed_in)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            shell = signed_in_context(browser, token).new_page()
            shell.goto(f"{base_url}/")
            nav = shell.locator("#augment-nav")
            expect(nav).to_contain_text("Runs", timeout=30_000)
            redeploy(extra)
            try:
                with httpx.Client(timeout=60) as http:
                    sign_in(http, base_url, {"username": admin, "password": "a long password"})
                    deadline = time.monotonic() + 90  # both up, their replicas answering their manifests
                    while not all(panels_of(http, base_url).get(name, {}).get("available")
                                  for name in ("spare", "vault")) and time.monotonic() < deadline:
                        time.sleep(1)
                    found = panels_of(http, base_url)
                    assert found["vault"]["available"] and found["spare"]["available"], found
                    assert http.get(f"{base_url}/ui/vault/").status_code == 200
                expect(nav).to_contain_text("Spare runs", timeout=60_000)  # no reload: the bar follows
                expect(nav).not_to_contain_text("Spare runs (unavailable)", timeout=60_000)
                expect(shell.locator("#panels")).to_contain_text("Spare runs")
                expect(nav).not_to_contain_text("Vault")
                shoot(shell, "shell")
            finally:
                redeploy(serve_config)  # the session's applications only: spare and vault removed
            expect(nav).to_contain_text("Spare runs (unavailable)", timeout=60_000)
            # while its replicas stop it reads "its application is DELETING", then this
            expect(shell.locator("#panels [data-panel=spare]")).to_contain_text("not deployed", timeout=60_000)
            shoot(shell, "shell-panel-down")
            page = shell.context.new_page()
            page.goto(f"{base_url}/ui/runs/")
            loaded = re.compile("most recent run|No runs yet")  # the panel read the store
            expect(page.locator("#runs-status")).to_contain_text(loaded, timeout=30_000)
            expect(page.locator("#augment-nav")).to_contain_text("Spare runs (unavailable)", timeout=30_000)
        finally:
            browser.close()


def type_into(editor: Any, text: str, marker: str) -> None:
    """Fill the code editor and see the text stay: the value the server sent when the file was
    opened can reach the editor after a fill made right away and replace it (seen on a loaded CI)."""
    from playwright.sync_api import expect

    for _ in range(3):
        editor.fill(text)
        try:
            expect(editor).to_contain_text(marker, timeout=5_000)
            editor.page.wait_for_timeout(500)  # and it is still there once the opening settled
            if marker in editor.inner_text():
                return
        except AssertionError:
            pass
    raise AssertionError(f"the editor did not keep the typed text (looking for {marker!r})")


def test_a_workflow_is_edited_checked_previewed_saved_and_launched_from_the_editor(
        base_url: str, workflows_dir: Path, signed_in: dict[str, str], settings: Settings) -> None:
    """The editor's main task in a browser: an edit into an error shows its path; fixed, previewed,
    saved as version 2 (kept in the store with who saved it), launched as a Ray job, and followed
    to `succeeded` in the runs panel through the link; the run ran version 2."""
    from playwright.sync_api import expect, sync_playwright

    from augment_core.workflow_history import WorkflowHistory
    from tests.conftest import SAMPLE_SPEC

    name = f"edited_{uuid.uuid4().hex[:6]}"
    file = workflows_dir / f"{name}.yaml"
    original = SAMPLE_SPEC.read_text(encoding="utf-8").replace("name: organisations", f"name: {name}")
    original = original.replace("../data/", f"{SAMPLE_SPEC.parent.parent}/data/")  # the copy lives elsewhere
    original = original.replace("dataset: organisations_enriched", f"dataset: {name}")
    file.write_text(original, encoding="utf-8")
    token, _ = session_of(settings, signed_in)
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                page = signed_in_context(browser, token).new_page()
                page.goto(f"{base_url}/ui/workflows/")
                expect(page.locator("#workflows-table")).to_contain_text(file.name, timeout=30_000)
                page.locator("#workflow-file input").fill(file.name)
                page.get_by_role("option", name=file.name).click()
                verdict, editor = page.locator("#workflow-verdict"), page.locator("#workflow-editor .cm-content")
                expect(verdict).to_contain_text(f"Valid: workflow {name}", timeout=30_000)

                broken = original.replace("params: {column: website}", "params: {column: website, bogus: 1}", 1)
                assert broken != original
                type_into(editor, broken, "bogus: 1")
                expect(verdict).to_contain_text("error(s)", timeout=30_000)
                expect(verdict).to_contain_text(".params.bogus")
                shoot(page, "workflows-error")

                fixed = original.replace("description: ", "description: Edited in the panel. ", 1)
                type_into(editor, fixed, "Edited in the panel.")
                expect(verdict).to_contain_text(f"Valid: workflow {name}", timeout=30_000)
                page.click("#workflow-preview")
                preview = page.locator("#workflow-preview-result")
                expect(preview).to_contain_text("nothing was sent", timeout=60_000)
                expect(preview).to_contain_text("300 record(s) in")

                page.click("#workflow-save")
                outcome = page.locator("#workflow-outcome")
                expect(outcome).to_contain_text(f"Saved {name} as version 2", timeout=30_000)
                assert "version: 2" in file.read_text() and "Edited in the panel." in file.read_text()
                kept = WorkflowHistory(open_store(settings)).versions(name)
                assert [(v.version, v.author) for v in kept] == [
                    (2, f"{signed_in['username']} (session)"), (1, "the workflows folder")]

                page.click("#workflow-launch")
                expect(outcome).to_contain_text("launched as a Ray job", timeout=60_000)
                shoot(page, "workflows-launched")
                run_id = outcome.locator("code").first.inner_text()
                link = outcome.get_by_role("link", name="Follow it in the runs panel").get_attribute("href")
                assert link == f"{PREFIX}/ui/runs/?run={run_id}"  # Gradio opens it in a new tab
                page.goto(f"{ORIGIN}{link}")
                expect(page.locator("#run-detail")).to_contain_text(f"Run {run_id} — succeeded", timeout=180_000)
            finally:
                browser.close()
        run = open_store(settings).get_run(run_id)
        assert run.workflow == name and run.workflow_version == 2 and run.counts["valid"] == 277
        from gradio_client import Client

        token, csrf = session_of(settings, signed_in)
        program = Client(f"{base_url}/ui/workflows/", verbose=False, download_files=False,
                         headers={"Cookie": f"{SESSION_COOKIE}={token}", "X-CSRF-Token": csrf, "Origin": ORIGIN})
        program.predict(api_name="/list_workflows")  # this session's file choices, as a page's first load
        verdict = program.predict(file.name, original.replace("params: {column: website}", "params: {}", 1),
                                  api_name="/check_workflow")
        assert "error(s)" in verdict and ".params.column" in verdict
    finally:
        file.unlink(missing_ok=True)


def test_an_alert_rule_saved_in_the_panel_fires_from_a_failed_run_in_the_tab_the_bar_and_the_webhook(
        base_url: str, signed_in: dict[str, str], settings: Settings, tmp_path: Path) -> None:
    """An operator adds a rule in the Alerts tab (a mistake first, refused by field); a real run of
    that workflow fails; the cluster's alert watcher fires the alert, which shows in the tab and in
    the shell's bar and is POSTed to the rule's webhook; marked resolved, the webhook hears that too."""
    import yaml
    from playwright.sync_api import expect, sync_playwright

    from augment_core.alerts import AlertStore
    from tests.conftest import SAMPLE_SPEC, TEST_HOOK_PORT
    from tests.integration.conftest import run_spec
    from tests.integration.private_services import WebhookReceiver

    workflow, rule_name = f"alerted_{uuid.uuid4().hex[:6]}", f"failed runs {uuid.uuid4().hex[:4]}"
    spec = yaml.safe_load(SAMPLE_SPEC.read_text())
    spec["name"] = workflow
    spec["source"] = {"kind": "dataset", "name": f"missing_{uuid.uuid4().hex[:6]}", "version": 1}
    spec["sink"] = {"dataset": workflow, "export_csv": False}
    spec_path = tmp_path / f"{workflow}.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    hook = WebhookReceiver(TEST_HOOK_PORT)
    alerts = AlertStore(open_store(settings))
    token, _ = session_of(settings, signed_in)
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                page = signed_in_context(browser, token).new_page()
                page.goto(f"{base_url}/ui/runs/?view=alerts")  # the bar's link opens the tab
                expect(page.locator("#alerts-status")).to_contain_text("rule", timeout=30_000)
                page.locator("#rule-name").get_by_role("textbox").fill(rule_name)
                page.locator("#rule-workflow").get_by_role("textbox").fill(workflow)
                page.locator("#rule-webhook").get_by_role("textbox").fill("AUGMENT_ALERT_WEBHOOK_TEST")
                page.locator("#rule-threshold input").fill("0.5")  # a run_failed rule takes none
                page.click("#rule-save")
                outcome = page.locator("#rule-outcome")
                expect(outcome).to_contain_text("threshold: a run_failed rule takes none", timeout=30_000)
                page.locator("#rule-threshold input").fill("")
                page.click("#rule-save")
                expect(outcome).to_contain_text(f"Rule {rule_name} added", timeout=30_000)
                expect(page.locator("#alert-rules")).to_contain_text(rule_name)

                run = run_spec(settings, spec_path)
                assert run.status == "failed"
                table = page.locator("#alerts-table")
                expect(table).to_contain_text(f"run {run.id}", timeout=60_000)
                expect(page.locator("#augment-nav #alerts")).to_contain_text("firing", timeout=30_000)
                [alert] = [a for a in alerts.firing() if a.run_id == run.id]
                assert alert.rule == rule_name and f"run {run.id} of {workflow} failed" in alert.message
                expect(table).to_contain_text("firing: sent: 127.0.0.1 answered 204", timeout=30_000)
                shoot(page, "runs-alerts")

                page.locator("#alert-id input").fill(str(alert.id))
                page.click("#alert-resolve")
                expect(page.locator("#alert-resolve-outcome")).to_contain_text(
                    f"Alert {alert.id} ({rule_name}, run {run.id}) marked resolved by {signed_in['username']}",
                    timeout=30_000)
            finally:
                browser.close()
        from gradio_client import Client

        program_token, csrf = session_of(settings, signed_in)
        program = Client(f"{base_url}/ui/runs/", verbose=False, download_files=False,
                         headers={"Cookie": f"{SESSION_COOKIE}={program_token}", "X-CSRF-Token": csrf,
                                  "Origin": ORIGIN})
        status, listed, _ = program.predict(api_name="/list_alerts")
        assert "rule(s) enabled" in status
        [row] = [r for r in listed["data"] if r[0] == alert.id]
        assert row[1] == "✓ resolved" and row[2] == rule_name
        sent = [(r["path"], r["body"]["state"]) for r in hook.received if r["body"]["run_id"] == run.id]
        assert sent == [("/hooks/s3cret-token", "firing"), ("/hooks/s3cret-token", "resolved")]
        resolved = alerts.get(alert.id)
        assert resolved is not None and resolved.resolved_by == f"{signed_in['username']} (session)"
        assert "s3cret" not in (resolved.delivery or "")
    finally:
        alerts.delete_rule(rule_name)
        hook.close()


def test_an_admin_makes_a_user_and_a_key_in_the_panel_that_the_api_takes_until_it_is_revoked_there(
        base_url: str, signed_in: dict[str, str], settings: Settings) -> None:
    """The admin panel's main task end to end: a user created (a short password refused first), a
    key made for them and shown once, the API answering it, the key revoked in the panel and the
    API refusing it (401), all of it in the audit tab; gradio_client sees the panel's endpoints,
    and an operator does not get in."""
    from gradio_client import Client
    from playwright.sync_api import expect, sync_playwright

    admin = f"admin-{uuid.uuid4().hex[:6]}"
    Identity(open_store(settings)).create_user(admin, Role.admin, "a long password")
    user = f"crm-{uuid.uuid4().hex[:6]}"
    token, csrf = session_of(settings, {"username": admin})
    with httpx.Client(timeout=60) as http:
        http.cookies.set(SESSION_COOKIE, session_of(settings, signed_in)[0])
        assert http.get(f"{base_url}/ui/admin/", headers={"accept": "text/html"}).status_code == 403
        assert "admin" not in panels_of(http, base_url)
        http.cookies.set(SESSION_COOKIE, token)
        assert panels_of(http, base_url)["admin"]["available"]

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = signed_in_context(browser, token).new_page()
            page.goto(f"{base_url}/ui/admin/")
            expect(page.locator("#users-status")).to_contain_text("user(s)", timeout=30_000)
            page.locator("#new-user-name").get_by_role("textbox").fill(user)
            page.locator("#new-user-password input").fill("short")
            page.locator("#create-user").click()
            expect(page.locator("#user-outcome")).to_contain_text("a password needs at least 8 characters")
            page.locator("#new-user-password input").fill("")
            page.locator("#create-user").click()
            expect(page.locator("#user-outcome")).to_contain_text(f"User {user} created, role viewer")
            shoot(page, "admin-users")

            page.get_by_role("tab", name="API keys").click()
            page.locator("#key-owner input").fill(user)
            page.get_by_role("option", name=user, exact=True).click()
            page.locator("#key-name").get_by_role("textbox").fill("crm sync")
            page.locator("#create-key").click()
            expect(page.locator("#key-outcome")).to_contain_text(f"created for {user}", timeout=30_000)
            secret = page.locator("#key-secret").get_by_role("textbox").input_value()
            prefix = secret[:12]
            assert re.fullmatch(r"aug_[0-9a-f]{8}", prefix), prefix
            shoot(page, "admin-keys")
            with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {secret}"}) as api:
                assert api.get(f"{base_url}/api/v1/me").json()["user"] == user

                page.locator("#revoke-choice input").fill(prefix)
                page.get_by_role("option", name=re.compile(prefix)).click()
                page.locator("#key-revoke").click()
                expect(page.locator("#key-confirm")).to_contain_text(f"Revoke {prefix}?")
                page.locator("#key-confirm-yes").click()
                expect(page.locator("#revoke-outcome")).to_contain_text(f"Key {prefix} (crm sync, of {user}) revoked")
                deadline = time.monotonic() + 30  # within the replicas' auth cache time
                while (status := api.get(f"{base_url}/api/v1/me").status_code) == 200 and time.monotonic() < deadline:
                    time.sleep(0.5)
                assert status == 401

            page.get_by_role("tab", name="Audit log").click()
            page.locator("#audit-who").get_by_role("textbox").fill(admin)
            page.locator("#audit-who").get_by_role("textbox").press("Enter")
            expect(page.locator("#audit-status")).to_contain_text("4 entries (newest first) · ⚠ 1 refused")
            table = page.locator("#audit-table")
            for action in ("key.revoke", "key.create", "user.create"):
                expect(table).to_contain_text(action)
            shoot(page, "admin-audit")
        finally:
            browser.close()

    client = Client(f"{base_url}/ui/admin/", verbose=False, download_files=False,
                    headers={"Cookie": f"{SESSION_COOKIE}={token}", "X-CSRF-Token": csrf, "Origin": ORIGIN})
    status, table, *_ = client.predict(api_name="/list_users")
    assert re.match(r"\d+ user\(s\) · \d+ admin\(s\)", status), status
    assert user in [row[0] for row in table["data"]]
    actions = [(e.actor, e.action, e.target, e.outcome) for e in list_entries(open_store(settings), actor=admin)]
    assert actions[:2] == [(f"{admin} (session)", "key.revoke", prefix, "ok"),
                           (f"{admin} (session)", "key.create", prefix, "ok")]


def test_a_queue_from_a_real_llm_run_is_reviewed_in_the_panel_and_promoted(
        base_url: str, workflows_dir: Path, signed_in: dict[str, str], settings: Settings, fake: Any,
        tmp_path: Path) -> None:
    """The review panel's main task end to end on the items of a real `llm` run: an item accepted
    with the keyboard, an edit of the wrong type refused and a right one kept, one rejected, one
    rerun (a new proposal), the rest accepted in bulk after a confirmation with the count; a second
    reviewer refused with who decided (gradio_client); promote writes the decisions."""
    from tests.integration.test_inference_runs import llm_step, provider, rows, write_csv, write_spec

    name = f"reviewed_{uuid.uuid4().hex[:8]}"
    data = write_csv(tmp_path / "orgs.csv", rows(3, name))
    # In the session's workflows folder, which the review panel reruns with; removed at the end,
    # since other tests list that folder.
    spec = write_spec(workflows_dir, name, data, {"fake": provider(fake.base_url, f"acct_{name}")},
                      [llm_step("profile", f"Profile ({name}).")], review={"rules": [{"step": "profile"}]})
    try:
        review_and_promote(base_url, settings, signed_in, spec, name)
    finally:
        spec.unlink(missing_ok=True)


def review_and_promote(base_url: str, settings: Settings, signed_in: dict[str, str], spec: Path, name: str) -> None:
    import pyarrow.parquet as pq
    from gradio_client import Client
    from playwright.sync_api import expect, sync_playwright

    from augment_core.reviews import get_item, list_items
    from tests.integration.conftest import run_spec

    run = run_spec(settings, spec)
    assert run.status == "succeeded", run.error
    items, total = list_items(open_store(settings), run_id=run.id, limit=100)
    assert total == 9  # industry, pitch and b2b of 3 records
    first, flag = items[0], next(i for i in items if i.field == "b2b" and i.id != items[0].id)
    dropped = next(i for i in items if i.field == "industry" and i.id != first.id)
    again = next(i for i in items if i.field == "pitch" and i.id != first.id)
    token, csrf = session_of(settings, signed_in)

    def press_next(page: Any, item_id: int) -> None:
        """Next pending opens `item_id`. On this loaded 2-core machine a press has once shown
        nothing (the store's read failed, now said in the outcome): a reviewer presses again."""
        for _ in range(3):
            page.locator("#review-next").click()
            try:
                expect(page.locator("#review-item")).to_contain_text(f"Item {item_id} · pending", timeout=15_000)
                return
            except AssertionError:
                shoot(page, "review-next-not-opened")
        expect(page.locator("#review-item")).to_contain_text(f"Item {item_id} · pending")

    def open_item(page: Any, item_id: int) -> None:
        table = page.locator("#review-queue")
        table.get_by_role("row").locator("visible=true").get_by_text(str(item_id), exact=True).first.click()
        expect(page.locator("#review-item")).to_contain_text(f"Item {item_id} ·", timeout=30_000)

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = signed_in_context(browser, token).new_page()
            page.goto(f"{base_url}/ui/review/")
            page.locator("#filter-dataset input").fill(name)
            page.get_by_role("option", name=name, exact=True).click()
            status = page.locator("#review-status")
            expect(status).to_contain_text("9 pending · 0 accepted", timeout=30_000)
            press_next(page, first.id)
            expect(page.locator("#review-diff")).to_contain_text("Proposed")
            shoot(page, "review-item")
            page.locator("#review-item").click()  # out of any field: the shortcuts act
            page.keyboard.press("a")
            expect(page.locator("#review-outcome")).to_contain_text(f"Item {first.id} accepted", timeout=30_000)
            expect(status).to_contain_text("8 pending · 1 accepted", timeout=30_000)

            open_item(page, flag.id)
            value = page.locator("#review-value").get_by_role("textbox")
            value.fill("maybe")
            page.locator("#review-edit").click()
            expect(page.locator("#review-outcome")).to_contain_text("b2b is bool: expected true or false, got 'maybe'")
            expect(value).to_have_value("maybe")  # kept as typed, to fix
            shoot(page, "review-edit-refused")
            value.fill("true")
            page.locator("#review-edit").click()
            expect(page.locator("#review-outcome")).to_contain_text(f"Item {flag.id} edited")
            # The queue is read again after a decision and its rows move up: click one once it has.
            expect(status).to_contain_text("7 pending · 1 accepted · 1 edited", timeout=30_000)

            open_item(page, dropped.id)
            page.locator("#review-item").click()
            page.keyboard.press("r")
            expect(page.locator("#review-outcome")).to_contain_text(f"Item {dropped.id} rejected", timeout=30_000)
            expect(status).to_contain_text("6 pending · 1 accepted · 1 edited · 1 rejected", timeout=30_000)

            open_item(page, again.id)
            page.locator("#review-rerun").click()
            expect(page.locator("#review-outcome")).to_contain_text(f"Item {again.id} rerun: the new proposal is",
                                                                    timeout=60_000)
            page.locator("#bulk-accept").click()
            expect(page.locator("#bulk-confirm")).to_contain_text("Accept all 6 pending item(s)")
            page.locator("#bulk-confirm-yes").click()
            expect(page.locator("#review-outcome")).to_contain_text("✓ 6 item(s) accepted", timeout=60_000)
            expect(status).to_contain_text("0 pending · 7 accepted · 1 edited · 1 rejected", timeout=30_000)

            reviewer = f"rev-{uuid.uuid4().hex[:6]}"  # a second reviewer, a moment later
            Identity(open_store(settings)).create_user(reviewer, Role.operator, None)
            other_token, other_csrf = session_of(settings, {"username": reviewer})
            client = Client(f"{base_url}/ui/review/", verbose=False, download_files=False,
                            headers={"Cookie": f"{SESSION_COOKIE}={other_token}", "X-CSRF-Token": other_csrf,
                                     "Origin": ORIGIN})
            refused, _, _ = client.predict(dropped.id, "", "any", name, "any", "any", "any", "any",  # dataset typed
                                        api_name="/accept_item")
            assert f"already rejected by {signed_in['username']} at " in refused, refused
            assert get_item(open_store(settings), dropped.id).state == "rejected"

            page.locator("#review-promote").click()
            expect(page.locator("#review-outcome")).to_contain_text("promoted to v2", timeout=60_000)
            shoot(page, "review-promoted")

            # The decisions, in the promoted version, in the data dashboard (the outcome's link).
            link = page.locator("#review-outcome a", has_text="data dashboard")
            assert link.get_attribute("href") == f"{PREFIX}/ui/data/?dataset={name}"
            page.goto(f"{base_url}/ui/data/?dataset={name}&version=2")
            expect(page.locator("#overview-status")).to_contain_text(f"{name} v2: 3 rows", timeout=30_000)
            decisions = page.locator("#overview-review")
            for field in ("industry", "pitch", "b2b"):
                expect(decisions).to_contain_text(field)
            expect(page.locator("#overview-steps")).to_contain_text("profile")
            shoot(page, "data-overview")
            page.get_by_role("tab", name="Diff").click()
            # The versions are filled in after the overview: compare once they are (v1 before v2).
            expect(page.locator("#diff-before input")).to_have_value("1", timeout=30_000)
            expect(page.locator("#diff-after input")).to_have_value("2", timeout=30_000)
            page.locator("#diff-compare").click()
            expect(page.locator("#diff-summary")).to_contain_text("v1 → v2", timeout=30_000)
            expect(page.locator("#diff-summary")).to_contain_text("industry")  # the rejected value, dropped
            shoot(page, "data-diff")
            page.get_by_role("tab", name="Activity").click()
            expect(page.locator("#activity-status")).to_contain_text("review decision(s) in 30 days", timeout=30_000)
            shoot(page, "data-activity")
            page.get_by_role("tab", name="Records").click()
            download = page.locator("#records-downloads a", has_text="CSV").first
            expect(download).to_be_visible(timeout=30_000)
            answer = page.request.get(f"{ORIGIN}{download.get_attribute('href')}")
            assert answer.status == 200 and '"org_id","name"' in answer.text().splitlines()[0]
            assert len(answer.text().splitlines()) == 4  # the header and 3 records
        finally:
            browser.close()

    viewer = f"viewer-{uuid.uuid4().hex[:6]}"  # the dashboard is every role's; gradio_client reads it
    Identity(open_store(settings)).create_user(viewer, Role.viewer, None)
    viewer_token, viewer_csrf = session_of(settings, {"username": viewer})
    data = Client(f"{base_url}/ui/data/", verbose=False, download_files=False,
                  headers={"Cookie": f"{SESSION_COOKIE}={viewer_token}", "X-CSRF-Token": viewer_csrf, "Origin": ORIGIN})
    status, *_ = data.predict(name, api_name="/list_versions")
    assert f"**{name}**: 2 version(s), the newest v2" in status
    summary, _ = data.predict(name, 1, 2, api_name="/diff_versions")
    changed = 1 + (flag.after is not True)  # the rejected industry; b2b too where the edit changed it
    assert summary.startswith(f"**v1 → v2**: 0 added, 0 removed, {changed} changed"), summary

    promoted = open_store(settings).get_dataset_version(name, 2)
    out = {r["record_uuid"]: r for r in pq.read_table(promoted.path).to_pylist()}
    assert out[flag.record_uuid]["b2b"] is True and out[dropped.record_uuid]["industry"] is None
    assert out[first.record_uuid][first.field] == first.after
