"""The runs panel's Alerts tab: the alerts and rules as read, a rule saved or refused by field, a
viewer refused before any change, an alert marked resolved; a failure to read keeps the tables."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from augment_core.alerts import AlertRule, AlertStore
from augment_core.store import MetadataStore
from ui.alerts import AlertAccess, alerts_view, delete_view, resolve_view, save_view
from ui.runs import build_runs_panel

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path: Path) -> AlertStore:
    return AlertStore(MetadataStore(f"sqlite:///{tmp_path / 'augment.db'}"))


def access(store: AlertStore, operators: tuple[str, ...] = ("ana",)) -> AlertAccess:
    return AlertAccess(recent=store.recent, rules=store.rules, save_rule=lambda r, u: store.save_rule(r, u),
                       delete_rule=lambda n, u: store.delete_rule(n), resolve=lambda i, u: store.resolve_by_hand(i, u),
                       may_edit=lambda user: user in operators)


def test_an_operator_adds_changes_and_deletes_a_rule_and_mistakes_are_named_by_field(store: AlertStore) -> None:
    tab = access(store)
    assert alerts_view(tab)[0] == "No alert rules yet: add one below (operators)."
    refused = save_view(tab, "slow", "run_stalled", None, None, "", "", True, "ana")
    assert refused.startswith("⚠️ **The rule was not saved**") and "minutes: a run_stalled rule needs" in refused
    assert save_view(tab, "slow", "run_stalled", None, 15, "orgs", "", True, "ana") == (
        "✓ Rule **slow** added (run_stalled).")
    assert save_view(tab, "slow", "run_stalled", None, 30, "", "", False, "ana") == (
        "✓ Rule **slow** changed (run_stalled, disabled).")
    [rule] = store.rules()
    assert (rule.minutes, rule.workflow, rule.enabled, rule.updated_by) == (30, None, False, "ana")
    status, _, rules = alerts_view(tab)
    assert status == "✓ No alert is firing · 0 of 1 rule(s) enabled"
    assert rules.iloc[0].tolist()[:7] == ["slow", "run_stalled", "", "30", "any", "", "no"]
    assert delete_view(tab, "nope", "ana") == "⚠️ There is no rule named **nope**."
    assert delete_view(tab, "slow", "ana").startswith("✓ Rule **slow** deleted")


def test_a_viewer_may_look_but_not_change_rules_or_alerts(store: AlertStore) -> None:
    tab = access(store)
    assert "needs the operator role; vera may only look" in save_view(tab, "x", "run_failed", None, None, "", "",
                                                                        True, "vera")
    assert "needs the operator role" in delete_view(tab, "x", "vera")
    assert "needs the operator role" in resolve_view(tab, 1, "vera")
    assert store.rules() == []


def test_firing_alerts_stand_out_and_one_is_marked_resolved_by_its_id(store: AlertStore) -> None:
    tab = access(store)
    rule = store.save_rule(AlertRule(name="failed", kind="run_failed"), by="ana")
    alert = store.fire(rule, "run r1", "run r1 of orgs failed: boom", run_id="r1")
    assert alert is not None
    status, table, _ = alerts_view(tab)
    assert status.startswith("⚠ **1 alert(s) firing**")
    assert table.iloc[0]["state"] == "⚠ firing" and table.iloc[0]["what happened"] == "run r1 of orgs failed: boom"
    assert resolve_view(tab, None, "ana").startswith("⚠️ Choose an alert")
    assert resolve_view(tab, alert.id, "ana") == f"✓ Alert {alert.id} (failed, run r1) marked resolved by ana."
    assert resolve_view(tab, alert.id, "ana") == f"⚠️ alert {alert.id} is not open"
    assert alerts_view(tab)[1].iloc[0]["resolved"].endswith("· ana")


def test_a_failure_to_read_the_alerts_is_an_error_and_keeps_the_tables(store: AlertStore) -> None:
    def down() -> list[AlertRule]:
        raise ConnectionError("the store is down")

    broken = AlertAccess(recent=store.recent, rules=down, save_rule=store.save_rule, delete_rule=lambda n, u: False,
                         resolve=store.resolve_by_hand, may_edit=lambda u: True)
    status, table, rules = alerts_view(broken)
    assert status == "⚠️ **Could not read the alerts**: ConnectionError: the store is down"
    assert isinstance(table, dict) and isinstance(rules, dict)  # gr.skip(): the tables stay as they were


def test_the_runs_panel_has_an_alerts_tab_with_named_endpoints(store: AlertStore) -> None:
    panel = build_runs_panel(lambda f: [], lambda r: (_ for _ in ()).throw(KeyError(r)), lambda r: iter(()),
                             alerts=access(store))
    assert isinstance(panel, gr.Blocks)
    names = {d.get("api_name") for d in panel.config["dependencies"]}
    assert {"list_alerts", "save_alert_rule", "delete_alert_rule", "resolve_alert"} <= names
