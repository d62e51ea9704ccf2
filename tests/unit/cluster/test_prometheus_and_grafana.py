"""cluster/prometheus/ and cluster/grafana/ against the metrics catalogue
(augment_core/metric_catalog.py): promtool checks the config and the rules and runs the rules'
unit tests (alerts_test.yml); every query names only documented metrics (or the rules' own
recorded series); every metric is on the dashboard; every alert kind of the runs panel has its
Prometheus rule; docs/metrics.md's table is the catalogue's."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from augment_core.alerts import KINDS
from augment_core.metric_catalog import CATALOG, exported_series, markdown_table
from tests.conftest import REQUIRE_SERVICES

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
PROMETHEUS = REPO / "cluster" / "prometheus"
DASHBOARD = REPO / "cluster" / "grafana" / "augment.json"
SERIES = re.compile(r"\b(ray_[a-z0-9_]+|augment:[a-z0-9_:]+)")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if REQUIRE_SERVICES:
            pytest.fail("promtool is missing: `make system-deps` installs Debian's prometheus package")
        pytest.skip("promtool is not installed (make system-deps)")
    return found


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def documented() -> set[str]:
    return {name for metric in CATALOG for name in exported_series(metric)}


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


@pytest.mark.parametrize("args", [["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                                  ["test", "rules", "alerts_test.yml"]], ids=lambda a: " ".join(a[:2]))
def test_promtool_accepts_the_config_and_the_rules_pass_their_tests(args: list[str]) -> None:
    result = subprocess.run([promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text(encoding="utf-8"))["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])
              if case.get("exp_alerts")}
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert alerts - tested == set(), "alerts without a test that makes them fire"


def test_each_alert_kind_of_the_panel_has_its_prometheus_rule() -> None:
    kinds = {rule["labels"]["kind"] for rule in rules() if "alert" in rule and "kind" in rule.get("labels", {})}
    assert kinds == set(KINDS)


@pytest.mark.parametrize("where", ["alerts.yml", "augment.json"])
def test_queries_name_only_documented_metrics(where: str) -> None:
    queries = [r["expr"] for r in rules()] if where == "alerts.yml" else dashboard_queries()
    named = {name for query in queries for name in SERIES.findall(query)}
    assert named, "no metric found in the queries"
    assert named - documented() - recorded() == set()


def test_the_dashboard_shows_every_metric() -> None:
    rule_exprs = {r["record"]: r["expr"] for r in rules() if "record" in r}
    text = " ".join(dashboard_queries())
    text += " ".join(expr for name, expr in rule_exprs.items() if name in text)  # what its recorded series read
    missing = [m.exported for m in CATALOG if m.exported not in text]
    assert missing == []


def test_the_grafana_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        assert all(t["refId"] and t["expr"].strip() for t in panel["targets"]), panel["title"]


@pytest.mark.parametrize("doc", ["docs/metrics.md", "README.md"])
def test_the_documented_metrics_table_is_the_catalogue(doc: str) -> None:
    text = (REPO / doc).read_text(encoding="utf-8")
    assert markdown_table() in text, f"{doc}'s table differs: paste metric_catalog.markdown_table()"
