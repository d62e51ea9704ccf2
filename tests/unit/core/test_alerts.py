"""Alert rules as operators write them (each mistake named by field), and the store of rules and
alerts: one open alert per rule and subject, resolving, marking by hand, deleting a rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from augment_core.alerts import AlertRule, AlertStore, RuleTaken, rule_errors
from augment_core.store import MetadataStore


@pytest.fixture
def alerts(tmp_path: Path) -> AlertStore:
    return AlertStore(MetadataStore(f"sqlite:///{tmp_path / 'augment.db'}"))


def errors_of(**fields: object) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        AlertRule(**fields)  # type: ignore[arg-type]
    return rule_errors(caught.value)


@pytest.mark.parametrize(("fields", "expected"), [
    ({"name": "x", "kind": "run_exploded"}, "kind 'run_exploded' is not one of run_failed, run_stalled"),
    ({"name": "x", "kind": "rate_429"}, "threshold: a rate_429 rule needs one (share of replies, 0-1)"),
    ({"name": "x", "kind": "rate_429", "threshold": 5}, "threshold: 5.0 is not a share between 0 (excluded) and 1"),
    ({"name": "x", "kind": "run_failed", "threshold": 0.5}, "threshold: a run_failed rule takes none"),
    ({"name": "x", "kind": "run_stalled"}, "minutes: a run_stalled rule needs how many minutes"),
    ({"name": "x", "kind": "consumer_lag", "threshold": 0.5}, "threshold: a lag of at least 1"),
    ({"name": "x", "kind": "circuit_open", "workflow": "w"}, "workflow: a circuit_open rule is not about runs"),
    ({"name": "x", "kind": "run_failed", "webhook_env": "AWS_SECRET_ACCESS_KEY"},
     "webhook_env 'AWS_SECRET_ACCESS_KEY': the name of a variable AUGMENT_ALERT_WEBHOOK_<NAME>"),
    ({"name": "", "kind": "run_failed"}, "name '': 1-100 letters"),
    ({"name": "x", "kind": "run_stalled", "minutes": -1}, "minutes: Input should be greater than 0"),
    ({"name": "x", "kind": "run_failed", "colour": "red"}, "colour: Extra inputs are not permitted"),
])
def test_a_rule_that_does_not_fit_its_kind_is_refused_with_the_field_and_why(
        fields: dict[str, object], expected: str) -> None:
    assert any(expected in line for line in errors_of(**fields)), errors_of(**fields)


def test_rules_are_kept_updated_by_id_and_a_taken_name_is_refused(alerts: AlertStore) -> None:
    saved = alerts.save_rule(AlertRule(name="failed runs", kind="run_failed"), by="ana (session)")
    assert saved.id is not None and saved.updated_by == "ana (session)"
    alerts.save_rule(saved.model_copy(update={"workflow": "orgs", "enabled": False}), by="bo (session)")
    [kept] = alerts.rules()
    assert (kept.workflow, kept.enabled, kept.updated_by) == ("orgs", False, "bo (session)")
    assert alerts.rules(enabled_only=True) == []
    with pytest.raises(RuleTaken, match="another alert rule is named 'failed runs'"):
        alerts.save_rule(AlertRule(name="failed runs", kind="circuit_open"), by="ana")


def test_one_alert_is_open_per_rule_and_subject_until_resolved(alerts: AlertStore) -> None:
    rule = alerts.save_rule(AlertRule(name="circuit", kind="circuit_open"), by="ana")
    assert rule.id is not None
    first = alerts.fire(rule, "provider acme", "open")
    assert first is not None and first.state == "firing"
    assert alerts.fire(rule, "provider acme", "open again") is None  # still open: not twice
    assert alerts.fire(rule, "provider other", "open") is not None
    resolved = alerts.resolve(rule.id, "provider acme")
    assert resolved is not None and (resolved.state, resolved.resolved_by) == ("resolved", "the condition cleared")
    assert alerts.resolve(rule.id, "provider acme") is None
    again = alerts.fire(rule, "provider acme", "open once more")  # a new episode
    assert again is not None and again.id != first.id
    assert alerts.fire(rule, "provider acme", "x", once=True) is None  # `once`: there ever was one
    assert [a.subject for a in alerts.firing()] == ["provider acme", "provider other"]


def test_an_operator_marks_an_alert_resolved_and_deleting_a_rule_resolves_its_alerts(alerts: AlertStore) -> None:
    rule = alerts.save_rule(AlertRule(name="failed", kind="run_failed"), by="ana")
    one = alerts.fire(rule, "run r1", "failed", run_id="r1")
    two = alerts.fire(rule, "run r2", "failed", run_id="r2")
    assert one is not None and two is not None
    marked = alerts.resolve_by_hand(one.id, "ana (session)")
    assert (marked.state, marked.resolved_by) == ("resolved", "ana (session)")
    with pytest.raises(KeyError, match=f"alert {one.id} is not open"):
        alerts.resolve_by_hand(one.id, "bo")
    with pytest.raises(KeyError, match="no alert 999"):
        alerts.resolve_by_hand(999, "bo")
    assert alerts.delete_rule("failed") and not alerts.delete_rule("failed")
    gone = alerts.get(two.id)
    assert gone is not None and (gone.state, gone.resolved_by) == ("resolved", "its rule was deleted")
