"""The runs panel's Alerts tab: what is firing and what was resolved, and the rules operators keep
(augment_core/alerts.py) — add, change, disable, delete — each mistake shown by field.

Built from functions the panel's application hands in (`AlertAccess`), so it knows nothing of
Serve, Ray or the store; a failure to load is an error beside the last data that did load.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd
from pydantic import ValidationError

from augment_core.alerts import KINDS, Alert, AlertRule, rule_errors

ALERT_COLUMNS = ["id", "state", "rule", "subject", "what happened", "fired (UTC)", "resolved", "webhook"]
RULE_COLUMNS = ["name", "kind", "threshold", "minutes", "workflow", "webhook variable", "enabled", "changed by",
                "changed (UTC)"]
KIND_HELP = "  \n".join(f"**{name}**: {kind.title}" + (f" — threshold: {kind.threshold}" if kind.threshold else "")
                        for name, kind in KINDS.items())


@dataclass(frozen=True)
class AlertAccess:
    """What the tab reads and does, as the signed-in user (by name). Changes raise an exception
    whose message says why they were refused; `may_edit` says whether the user's role may."""

    recent: Callable[[], list[Alert]]  # open and resolved alerts, newest first
    rules: Callable[[], list[AlertRule]]
    save_rule: Callable[[AlertRule, str], AlertRule]
    delete_rule: Callable[[str, str], bool]
    resolve: Callable[[int, str], Alert]
    may_edit: Callable[[str], bool]


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def alerts_table(alerts: list[Alert]) -> pd.DataFrame:
    rows = [[a.id, "⚠ firing" if a.state == "firing" else "✓ resolved", a.rule, a.subject, a.message,
             _when(a.fired_at), f"{_when(a.resolved_at)} · {a.resolved_by}" if a.resolved_at else "",
             a.delivery or ""] for a in alerts]
    return pd.DataFrame(rows, columns=ALERT_COLUMNS)


def rules_table(rules: list[AlertRule]) -> pd.DataFrame:
    rows = [[r.name, r.kind, "" if r.threshold is None else f"{r.threshold:g}",
             "" if r.minutes is None else f"{r.minutes:g}", r.workflow or "any", r.webhook_env or "",
             "yes" if r.enabled else "no", r.updated_by, _when(r.updated_at)] for r in rules]
    return pd.DataFrame(rows, columns=RULE_COLUMNS)


def alerts_view(access: AlertAccess) -> tuple[str, Any, Any]:
    """(status, alerts table, rules table); on failure the tables stay as they were."""
    try:
        alerts, rules = access.recent(), access.rules()
    except Exception as exc:
        return f"⚠️ **Could not read the alerts**: {type(exc).__name__}: {exc}", gr.skip(), gr.skip()
    firing = [a for a in alerts if a.state == "firing"]
    enabled = sum(r.enabled for r in rules)
    if not rules:
        status = "No alert rules yet: add one below (operators)."
    elif firing:
        status = f"⚠ **{len(firing)} alert(s) firing** · {enabled} of {len(rules)} rule(s) enabled"
    else:
        status = f"✓ No alert is firing · {enabled} of {len(rules)} rule(s) enabled"
    return status, alerts_table(alerts), rules_table(rules)


def _number(value: float | None) -> float | None:
    """An empty number field comes as 0 (or None); no kind takes 0 for a threshold or minutes."""
    return None if value is None or pd.isna(value) or value == 0 else float(value)


def _text(value: str | None) -> str | None:
    return (value or "").strip() or None


def save_view(access: AlertAccess, name: str, kind: str, threshold: float | None, minutes: float | None,
              workflow: str | None, webhook_env: str | None, enabled: bool, user: str) -> str:
    """Save the form as a rule: a new one, or the rule of that name changed."""
    try:
        if not access.may_edit(user):
            return f"⚠️ Changing alert rules needs the operator role; {user} may only look."
        existing = {r.name: r for r in access.rules()}.get((name or "").strip())
        rule = AlertRule(id=existing.id if existing else None, name=(name or "").strip(), kind=kind or "",
                         threshold=_number(threshold), minutes=_number(minutes), workflow=_text(workflow),
                         webhook_env=_text(webhook_env), enabled=bool(enabled))
    except ValidationError as exc:
        return "⚠️ **The rule was not saved**:\n" + "\n".join(f"- `{line}`" for line in rule_errors(exc))
    except Exception as exc:
        return f"⚠️ **The rule was not saved**: {exc}"
    try:
        saved = access.save_rule(rule, user)
    except Exception as exc:  # a taken name, the store down
        return f"⚠️ **The rule was not saved**: {exc}"
    return f"✓ Rule **{saved.name}** {'changed' if existing else 'added'} ({saved.kind}" + (
        "" if saved.enabled else ", disabled") + ")."


def delete_view(access: AlertAccess, name: str, user: str) -> str:
    name = (name or "").strip()
    try:
        if not access.may_edit(user):
            return f"⚠️ Deleting alert rules needs the operator role; {user} may only look."
        if not name:
            return "⚠️ Type or choose the name of the rule to delete."
        if not access.delete_rule(name, user):
            return f"⚠️ There is no rule named **{name}**."
    except Exception as exc:
        return f"⚠️ **The rule was not deleted**: {exc}"
    return f"✓ Rule **{name}** deleted; its open alerts are marked resolved."


def resolve_view(access: AlertAccess, alert_id: float | None, user: str) -> str:
    try:
        if not access.may_edit(user):
            return f"⚠️ Marking alerts resolved needs the operator role; {user} may only look."
        if not alert_id or pd.isna(alert_id):  # an empty number field reads 0
            return "⚠️ Choose an alert in the table (or type its id) first."
        alert = access.resolve(int(alert_id), user)
    except KeyError as exc:
        return f"⚠️ {exc.args[0]}"
    except Exception as exc:
        return f"⚠️ **Not marked resolved**: {exc}"
    return f"✓ Alert {alert.id} ({alert.rule}, {alert.subject}) marked resolved by {user}."


def rule_form(rules: pd.DataFrame, event: gr.SelectData) -> tuple[Any, ...]:
    """The chosen row of the rules table, in the form, to change it."""
    row = list(event.row_value)
    threshold, minutes = (float(v) if str(v) else None for v in (row[2], row[3]))
    return (row[0], row[1], threshold, minutes, "" if row[4] == "any" else row[4], row[5], row[6] == "yes")


def _alert_id(event: gr.SelectData) -> int:
    return int(event.row_value[0])


def build_alerts_tab(access: AlertAccess, page: gr.Blocks, timer: gr.Timer) -> None:
    """The tab's content, inside the caller's `gr.Tab` of `page`: read when the page loads and on
    the caller's timer."""
    def read() -> tuple[str, Any, Any]:
        return alerts_view(access)

    def save(name: str, kind: str, threshold: float | None, minutes: float | None, workflow: str | None,
             webhook_env: str | None, enabled: bool, request: gr.Request) -> tuple[str, str, Any, Any]:
        return (save_view(access, name, kind, threshold, minutes, workflow, webhook_env, enabled,
                          request.username or ""), *read())

    def delete(name: str, request: gr.Request) -> tuple[str, str, Any, Any]:
        return (delete_view(access, name, request.username or ""), *read())

    def resolve(alert_id: float | None, request: gr.Request) -> tuple[str, str, Any, Any]:
        return (resolve_view(access, alert_id, request.username or ""), *read())

    status = gr.Markdown("Loading alerts…", elem_id="alerts-status")
    table = gr.Dataframe(headers=ALERT_COLUMNS, interactive=False, elem_id="alerts-table", max_height=360,
                         label="Alerts, newest first (click one to choose it)", wrap=True,
                         column_widths=["4%", "8%", "10%", "14%", "34%", "10%", "10%", "10%"])
    with gr.Row(equal_height=True):
        chosen = gr.Number(label="Alert id", value=None, precision=0, elem_id="alert-id", scale=0)
        resolve_button = gr.Button("Mark resolved", scale=0, elem_id="alert-resolve")
        resolve_outcome = gr.Markdown("", elem_id="alert-resolve-outcome")
    gr.Markdown("### Rules")
    rules = gr.Dataframe(headers=RULE_COLUMNS, interactive=False, elem_id="alert-rules", label="Alert rules")
    with gr.Group():
        with gr.Row():
            name = gr.Textbox(label="Name", elem_id="rule-name", scale=2)
            kind = gr.Dropdown(label="Kind", choices=list(KINDS), value="run_failed", elem_id="rule-kind", scale=2)
            threshold = gr.Number(label="Threshold", value=None, elem_id="rule-threshold", scale=1)
            minutes = gr.Number(label="Minutes (run_stalled)", value=None, elem_id="rule-minutes", scale=1)
        with gr.Row():
            workflow = gr.Textbox(label="Workflow (run kinds; empty: any)", elem_id="rule-workflow", scale=2)
            webhook = gr.Textbox(label="Webhook variable (AUGMENT_ALERT_WEBHOOK_…, optional)",
                                 elem_id="rule-webhook", scale=2)
            enabled = gr.Checkbox(label="Enabled", value=True, elem_id="rule-enabled", scale=1)
        with gr.Row():
            save_button = gr.Button("Save rule", variant="primary", scale=0, elem_id="rule-save")
            delete_button = gr.Button("Delete rule", variant="stop", scale=0, elem_id="rule-delete")
        rule_outcome = gr.Markdown("", elem_id="rule-outcome")
    with gr.Accordion("What each kind watches", open=False):
        gr.Markdown(KIND_HELP)

    shown = [status, table, rules]
    form = [name, kind, threshold, minutes, workflow, webhook, enabled]
    page.load(read, None, shown, api_name="list_alerts")
    timer.tick(read, None, shown, show_progress="hidden", api_visibility="private")
    save_button.click(save, form, [rule_outcome, *shown], api_name="save_alert_rule")
    delete_button.click(delete, name, [rule_outcome, *shown], api_name="delete_alert_rule")
    resolve_button.click(resolve, chosen, [resolve_outcome, *shown], api_name="resolve_alert")
    rules.select(rule_form, rules, form, api_visibility="private")
    table.select(_alert_id, None, chosen, api_visibility="private")
