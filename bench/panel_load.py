"""Panel load time: each page's time to usable content in headless Chromium, beside a static page.

Starts a head node as `augment cluster up` does (its own ports, a temporary store) and deploys
configs/serve.yaml under /augment as `augment serve` does. A signed-in admin (a session written
straight to the store, no login form) and one finished run in the store give the pages something
to show. Then each page is loaded cold (a new browser context: no cache, only the session cookie)
in Debian's headless Chromium, timed with `time.perf_counter()` from just before `page.goto` until
the page is usable:

  static baseline  /augment/login: the shell's static login page, served by the same Serve ingress
                   (`h1` visible)
  shell            /augment/: the navigation bar's "Runs" link and a panel card, both drawn by a
                   script from /augment/panels.json, visible
  runs panel       /augment/ui/runs/: the stored run's row of the runs table visible
  workflow editor  /augment/ui/workflows/: the sample workflow's row of the workflows table visible
  review panel     /augment/ui/review/: the queue's counts and its first page, of 10,100 pending items
  data dashboard   /augment/ui/data/: the overview of a 100,000-row version (read on the first load of
                   each replica, then kept)
  admin panel      /augment/ui/admin/: the signed-in admin's row of the users table visible

Then the review queue's page turn at 10,000 pending items: in an open review panel, from a click on
"Next 50" until that page's range is shown, `--loads` times from the first page onwards, beside the
same turn on a queue of 100 items.

One warm-up load per page first (not counted), then `--loads` cold loads per page, round robin
so drift falls on every page alike; beside each, a returning visit: a new page (a new Gradio
session) in a browser context that loaded the page before, so with what its cache kept. Prints,
for both, each page's median, min and max, its ratio to the static baseline's median, and PASS
or FAIL against 1 s (the exit status is 0 either way, unless something errors). The browser
runs on the same machine as the cluster and takes its share of CPU.
The ingress is AUGMENT_SERVE_INGRESS's (Settings' default when unset).

    .venv/bin/python bench/panel_load.py [--loads 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from augment_core.identity import SESSION_COOKIE, Identity, Role  # noqa: E402
from augment_core.reviews import insert_items  # noqa: E402
from augment_core.settings import Settings  # noqa: E402
from augment_core.storage import StoragePaths  # noqa: E402
from augment_core.store import open_store, utcnow  # noqa: E402
from cluster import local  # noqa: E402
from serve_apps import deploy  # noqa: E402

# Apart from a developer's own cluster, the test suite's and the other benchmarks'.
CLUSTER = local.LocalCluster(dashboard_port=8395, gcs_port=6403, client_server_port=9023, agent_port=52395,
                             metrics_port=8398)
SERVE_PORT = 8023
PREFIX = "/augment"
BASE = f"http://127.0.0.1:{SERVE_PORT}{PREFIX}"
TARGET_S = 1.0
WAIT_MS = 30_000  # a load slower than this is an error, not a figure
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
BASELINE = "static baseline (login)"


def start_cluster(folder: Path) -> tuple[Settings, subprocess.Popen[bytes]]:
    """A head node on this benchmark's ports with its store in `folder`, as bench/online_latency.py starts one."""
    os.environ.update({
        "AUGMENT_STORAGE_ROOT": str(folder / "data"),
        "AUGMENT_DATABASE_URL": f"sqlite:///{folder / 'augment.db'}",
        "AUGMENT_WORKFLOWS_DIR": str(ROOT / "configs" / "workflows"),
        "RAY_AUTH_TOKEN_PATH": str(folder / "auth_token"),
    })
    os.environ.pop("RAY_AUTH_MODE", None)
    settings = Settings()
    if local.is_up(CLUSTER):
        raise SystemExit(f"something already listens on {CLUSTER.dashboard_url}")
    head = local.start_attached(settings, CLUSTER, folder / "head.log")
    local.adopt_auth_mode(CLUSTER.dashboard_url)
    return settings, head


def stop_cluster(head: subprocess.Popen[bytes]) -> None:
    """End this cluster only (never `ray stop`, which ends every Ray process on the machine), and
    remove the folder its HAProxy kept its state in (named after this cluster's ports)."""
    head.terminate()
    head.wait(timeout=60)
    while local.is_up(CLUSTER):
        time.sleep(1)
    shutil.rmtree(local.haproxy_env(CLUSTER)["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"], ignore_errors=True)


def stored_run(settings: Settings) -> str:
    """A finished run written straight to the store, as a coordinator would leave it."""
    store = open_store(settings)
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    spec = ROOT / "configs" / "workflows" / "organisations.yaml"
    store.create_run(run_id, "organisations", 1, str(spec), ["validate", "write"])
    store.update_run(run_id, status="running", started_at=utcnow(), heartbeat_at=utcnow(),
                     counts={"in": 12, "valid": 12, "quarantined": 0, "augmented": 12, "failed": 0, "skipped": 0},
                     steps=[{"name": "validate", "state": "succeeded", "rows": 12},
                            {"name": "write", "state": "succeeded", "rows": 12}])
    store.finish_run(run_id, "succeeded", output={"dataset": "organisations_enriched", "version": 1,
                                                          "path": "/data/x", "quarantine_path": "/data/q"})
    return run_id


QUEUE, SMALL = 10_000, 100  # pending review items of two datasets


def seeded_queue(settings: Settings, items: int, dataset: str) -> None:
    """`items` pending review items of one run, as a run's review step queues them."""
    rows = [{"dataset": dataset, "version": 1, "record_uuid": uuid.uuid4().hex, "field": "industry",
             "step": "profile", "reason": "output of step profile", "before": None, "after": f"value {n}",
             "provenance": {"augmenter": "llm", "provider": "fake", "model": "fake-small"}} for n in range(items)]
    insert_items(open_store(settings), f"bench-{dataset}", dataset, rows)


def stored_version(settings: Settings, rows: int = 100_000) -> str:
    """A catalogued version of `rows` records, as a run leaves one."""
    dataset, store = "bench_orgs", open_store(settings)
    path = Path(StoragePaths(settings).dataset_run(dataset, "bench-run"))
    path.mkdir(parents=True)
    table = pa.table({"record_uuid": [f"{i:032x}" for i in range(rows)], "name": [f"Company {i}" for i in range(rows)],
                      "employees": list(range(1, rows + 1)), "profile_status": ["ok"] * rows})
    pq.write_table(table, path / "part-0.parquet")
    store.add_dataset_version(dataset, store.next_dataset_version(dataset), str(path),
                              {f.name: str(f.type) for f in table.schema}, rows, "bench-run")
    return dataset


def session_token(settings: Settings) -> tuple[str, str]:
    """A signed-in admin's (name, session cookie value), without the login page."""
    name = f"bench-{uuid.uuid4().hex[:6]}"
    Identity(open_store(settings)).create_user(name, Role.admin, "a long password")
    token, _ = Identity(open_store(settings)).create_session(name, dt.timedelta(hours=1))
    return name, token


def pages(run_id: str, admin: str) -> dict[str, tuple[str, Callable[[Page], None]]]:
    """Page name -> (URL, what waits until it is usable)."""
    def static(page: Page) -> None:
        page.locator("h1").wait_for(timeout=WAIT_MS)

    def shell(page: Page) -> None:
        page.locator("#augment-nav a").filter(has_text="Runs").first.wait_for(timeout=WAIT_MS)
        page.locator("#panels .card").first.wait_for(timeout=WAIT_MS)

    def runs(page: Page) -> None:
        row = page.locator("#runs-table").get_by_role("row").filter(has_text=run_id).locator("visible=true")
        row.wait_for(timeout=WAIT_MS)

    def workflows(page: Page) -> None:
        row = page.locator("#workflows-table").get_by_role("row").filter(has_text="organisations.yaml")
        row.locator("visible=true").first.wait_for(timeout=WAIT_MS)

    def admin_panel(page: Page) -> None:
        row = page.locator("#users-table").get_by_role("row").filter(has_text=admin)
        row.locator("visible=true").first.wait_for(timeout=WAIT_MS)

    def review(page: Page) -> None:
        page.locator("#review-status").get_by_text(f"{QUEUE + SMALL:,} pending").wait_for(timeout=WAIT_MS)
        page.locator("#review-queue").get_by_role("row").locator("visible=true").nth(1).wait_for(timeout=WAIT_MS)

    def data(page: Page) -> None:
        page.locator("#overview-status").get_by_text("100,000 rows").wait_for(timeout=WAIT_MS)

    return {BASELINE: (f"{BASE}/login", static), "shell": (f"{BASE}/", shell),
            "runs panel": (f"{BASE}/ui/runs/", runs), "workflow editor": (f"{BASE}/ui/workflows/", workflows),
            "review panel": (f"{BASE}/ui/review/", review), "data dashboard": (f"{BASE}/ui/data/", data),
            "admin panel": (f"{BASE}/ui/admin/", admin_panel)}


def page_turns(token: str, dataset: str, total: int, turns: int) -> list[float]:
    """Seconds from a click on "Next 50" to the next page's range shown, in the review panel
    filtered to `dataset`."""
    seconds = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = signed_in(browser, token).new_page()
            page.goto(f"{BASE}/ui/review/", timeout=WAIT_MS)
            page.locator("#filter-dataset input").fill(dataset)
            page.get_by_role("option", name=dataset, exact=True).click()
            status = page.locator("#review-status")
            status.get_by_text(f"of {total:,}").first.wait_for(timeout=WAIT_MS)
            for turn in range(1, turns + 1):
                start = time.perf_counter()
                page.locator("#queue-next").click()
                status.get_by_text(f"items {turn * 50 + 1:,}–").wait_for(timeout=WAIT_MS)
                seconds.append(time.perf_counter() - start)
        finally:
            browser.close()
    return seconds


def signed_in(browser: Any, token: str) -> Any:
    context = browser.new_context()
    context.add_cookies([{"name": SESSION_COOKIE, "value": token, "domain": "127.0.0.1", "path": PREFIX,
                          "httpOnly": True, "sameSite": "Lax"}])
    return context


def load(context: Any, url: str, usable: Callable[[Page], None]) -> float:
    """Seconds from just before `goto` until `usable` holds, in a new page of `context`."""
    page = context.new_page()
    try:
        start = time.perf_counter()
        page.goto(url, timeout=WAIT_MS)
        usable(page)
        return time.perf_counter() - start
    finally:
        page.close()


def cold_load(browser: Any, token: str, url: str, usable: Callable[[Page], None]) -> float:
    """A first visit: a new context, so an empty cache."""
    context = signed_in(browser, token)
    try:
        return load(context, url, usable)
    finally:
        context.close()


def measure(admin: str, token: str, run_id: str,
            loads: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(cold loads, returning visits) per page. A returning visit is a new page (a new Gradio
    session) in a context that loaded the page before: what its cache headers let it keep."""
    targets = pages(run_id, admin)
    cold: dict[str, list[float]] = {name: [] for name in targets}
    again: dict[str, list[float]] = {name: [] for name in targets}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            returning = {name: signed_in(browser, token) for name in targets}
            for name, (url, usable) in targets.items():  # warm-up, not counted: fills each returning cache
                cold_load(browser, token, url, usable)
                load(returning[name], url, usable)
            for _ in range(loads):
                for name, (url, usable) in targets.items():
                    cold[name].append(cold_load(browser, token, url, usable))
                    again[name].append(load(returning[name], url, usable))
        finally:
            browser.close()
    return cold, again


def report(times: dict[str, list[float]]) -> None:
    baseline = statistics.median(times[BASELINE])
    print(f"{'page':<24} {'median s':>9} {'min':>7} {'max':>7} {'x static':>9}  < {TARGET_S:g} s")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{name:<24} {median:9.3f} {min(seconds):7.3f} {max(seconds):7.3f} {median / baseline:9.1f}"
              f"  {'PASS' if median < TARGET_S else 'FAIL'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--loads", type=int, default=5, help="cold loads per page (the median is printed)")
    args = parser.parse_args()
    if args.loads < 1:
        parser.error("--loads must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        settings, head = start_cluster(Path(tmp))
        try:
            config = deploy.load_config(ROOT / "configs" / "serve.yaml", prefix=PREFIX, port=SERVE_PORT)
            deploy.deploy(CLUSTER.dashboard_url, config)
            run_id = stored_run(settings)
            seeded_queue(settings, QUEUE, "bench_queue")
            seeded_queue(settings, SMALL, "bench_small")
            stored_version(settings)
            admin, token = session_token(settings)
            print(f"ingress {settings.serve_ingress}; {args.loads} load(s) per page after one warm-up")
            cold, again = measure(admin, token, run_id, args.loads)
            print("first visit (cold: empty cache)")
            report(cold)
            print("\nreturning visit (a new page and Gradio session; what the browser's cache kept)")
            report(again)
            print(f"\nreview queue: a page turn (\"Next 50\"), {args.loads} turn(s) each")
            small = page_turns(token, "bench_small", SMALL, 1)  # its one turn
            large = page_turns(token, "bench_queue", QUEUE, args.loads)
            print(f"{'queue':<24} {'median s':>9} {'min':>7} {'max':>7}")
            for name, seconds in ((f"{QUEUE:,} items", large), (f"{SMALL} items", small)):
                print(f"{name:<24} {statistics.median(seconds):9.3f} {min(seconds):7.3f} {max(seconds):7.3f}")
            print(f"ratio {statistics.median(large) / statistics.median(small):.2f}x")
        finally:
            stop_cluster(head)
    return 0


if __name__ == "__main__":
    sys.exit(main())
