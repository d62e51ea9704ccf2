"""The review panel: the queue with filters and counts per state, one item at a time (the record's
input fields, the previous value beside the proposed one with the differences marked, the
provenance and the rule that sent it), accept / edit / reject / rerun with keyboard shortcuts, bulk
decisions over the current filter after a confirmation that states the count, and promote.

Built from functions the panel's application hands in (`ReviewAccess`: the same functions as the
API's /v1/reviews), so it knows nothing of Serve, Ray or the store. Every change is made as the
signed-in user; a refusal (a value that does not fit the field, an item another reviewer decided)
is shown as the error it is, with who decided; a failure to load is an error beside the last data.
"""

from __future__ import annotations

import difflib
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import gradio as gr
import pandas as pd

from augment_core.reviews import REVIEW_STATES, ReviewItem

QUEUE_COLUMNS = ["id", "state", "dataset", "field", "proposed", "rule", "run"]
ANY = "any"
PAGE = 50
MAX_SHOWN = 80  # characters of a proposed value in the queue table
PROVENANCE_KEYS = ["augmenter", "step", "provider", "account", "model", "template_hash", "cost_usd", "cache_hit",
                   "attempts", "run_id"]
NOTHING_CHOSEN = "Choose an item: click a row of the queue, or press **Next pending** (n)."
# Shortcuts on the page: a accept, r reject, n next pending; never while typing in a field.
# Gradio runs a head's scripts twice (the page's <head>, then again from its config): once only.
SHORTCUTS = """<script>
if (!window.augmentReviewKeys) {
  window.augmentReviewKeys = true;
  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest("input, textarea, select, [contenteditable=true]");
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const button = {a: "review-accept", r: "review-reject", n: "review-next"}[event.key];
    const found = button && document.getElementById(button);
    if (found) { event.preventDefault(); found.click(); }
  });
}
</script>"""


@dataclass(frozen=True)
class QueueFilter:
    state: str | None = "pending"
    dataset: str | None = None
    run_id: str | None = None
    step: str | None = None
    field: str | None = None
    reason: str | None = None  # the review rule that sent the item


@dataclass(frozen=True)
class Bulk:
    """What a bulk decision did."""

    done: int
    refused: int
    first_refusal: str | None = None


@dataclass(frozen=True)
class ReviewAccess:
    """What the panel reads and does; changes take the signed-in user's name first and raise an
    exception whose message says why they were refused."""

    page: Callable[[QueueFilter, int, int, int | None], tuple[list[ReviewItem], int]]  # (filter, limit, offset, after)
    counts: Callable[[QueueFilter], dict[str, int]]
    facets: Callable[[], dict[str, list[str]]]
    item: Callable[[int], ReviewItem]
    record: Callable[[ReviewItem], dict[str, Any]]  # the record's input fields
    field_type: Callable[[ReviewItem], str]
    choices: Callable[[ReviewItem], list[str]]  # the values an enum field takes; [] for any other
    accept: Callable[[str, int], ReviewItem]
    reject: Callable[[str, int], ReviewItem]
    edit: Callable[[str, int, str], ReviewItem]  # (caller, id, the value as typed)
    rerun: Callable[[str, int], ReviewItem]
    bulk: Callable[[str, str, QueueFilter], Bulk]  # (caller, "accept" or "reject", filter)
    promote: Callable[[str, str], str]  # (caller, dataset) -> what was written
    dataset_url: Callable[[str], str]


def _short(value: Any, limit: int = MAX_SHOWN) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _chosen(value: str | None) -> str | None:
    return None if value in (None, "", ANY) else value


def queue_filter(state: str | None, dataset: str | None, run_id: str | None, step: str | None, field: str | None,
                 reason: str | None) -> QueueFilter:
    return QueueFilter(_chosen(state), _chosen(dataset), _chosen(run_id), _chosen(step), _chosen(field),
                       _chosen(reason))


def queue_table(items: list[ReviewItem]) -> pd.DataFrame:
    rows = [[i.id, i.state, f"{i.dataset} v{i.version}", i.field, _short(i.after), i.reason, i.run_id]
            for i in items]
    return pd.DataFrame(rows, columns=QUEUE_COLUMNS)


def counts_line(counts: dict[str, int], wanted: QueueFilter) -> str:
    parts = [f"**{counts.get(s, 0):,} {s}**" if s == wanted.state else f"{counts.get(s, 0):,} {s}"
             for s in REVIEW_STATES]
    return " · ".join(parts)


def queue_view(access: ReviewAccess, wanted: QueueFilter, offset: int) -> tuple[str, Any, int]:
    """(status, table, offset); on failure the table stays as it was."""
    try:
        counts = access.counts(wanted)
        items, total = access.page(wanted, PAGE, max(0, offset), None)
        if not items and offset > 0 and total:  # the page emptied under us (decisions): back to the last one
            offset = (total - 1) // PAGE * PAGE
            items, total = access.page(wanted, PAGE, offset, None)
    except Exception as exc:
        return f"⚠️ **Could not read the review queue**: {type(exc).__name__}: {exc}", gr.skip(), offset
    shown = f"items {offset + 1:,}–{offset + len(items):,} of {total:,}" if items else "no items match"
    return f"{counts_line(counts, wanted)}  \n{shown}", queue_table(items), offset


def facet_updates(access: ReviewAccess) -> tuple[Any, ...]:
    """The filters' choices: what the queue holds."""
    try:
        found = access.facets()
    except Exception:  # the queue view says the store is down; the filters keep their choices
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return tuple(gr.update(choices=[ANY, *found.get(name, [])]) for name in ("dataset", "run_id", "step", "field",
                                                                            "reason"))


def marked_diff(before: Any, after: Any) -> str:
    """HTML of the previous value beside the proposed one, word by word: removed words struck on
    the left, added ones marked on the right."""
    old = re.split(r"(\s+)", "" if before is None else _short(before, 10_000))
    new = re.split(r"(\s+)", "" if after is None else _short(after, 10_000))
    left, right = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        a, b = html.escape("".join(old[i1:i2])), html.escape("".join(new[j1:j2]))
        if tag == "equal":
            left.append(a)
            right.append(b)
        else:
            if a:
                left.append(f'<del class="removed">{a}</del>')
            if b:
                right.append(f'<ins class="added">{b}</ins>')
    empty = '<span class="none">(none)</span>'
    return ('<div class="review-diff"><div><h4>Previous version</h4><p>' + ("".join(left) or empty) + "</p></div>"
            '<div><h4>Proposed</h4><p>' + ("".join(right) or empty) + "</p></div></div>")


def provenance_lines(provenance: dict[str, Any] | None) -> str:
    if not provenance:
        return "_no provenance recorded_"
    known = [f"**{k.replace('_', ' ')}**: `{_short(provenance[k], 120)}`" for k in PROVENANCE_KEYS if k in provenance]
    rest = {k: v for k, v in provenance.items() if k not in PROVENANCE_KEYS}
    extra = [f"**{k.replace('_', ' ')}**: `{_short(v, 120)}`" for k, v in sorted(rest.items())]
    return " · ".join(known + extra)


def item_view(access: ReviewAccess, item_id: int | None) -> tuple[str, str, str, Any, Any, str]:
    """(summary, diff HTML, input fields markdown, edit box update, enum choices update, the field's type)."""
    no_choices = gr.update(visible=False, choices=[], value=None)
    if not item_id:
        return NOTHING_CHOSEN, "", "", gr.update(label="New value", value=""), no_choices, ""
    try:
        item = access.item(int(item_id))
        kind = access.field_type(item)
        record = access.record(item)
        options = access.choices(item)
    except KeyError as exc:
        return f"⚠️ {exc.args[0]}", "", "", gr.skip(), no_choices, ""
    except Exception as exc:
        return f"⚠️ **Could not read item {item_id}**: {type(exc).__name__}: {exc}", "", "", gr.skip(), no_choices, \
            ""
    decided = ""
    if item.state != "pending":
        value = f", value `{_short(item.decided_value, 200)}`" if item.state == "edited" else ""
        by = f" by **{item.decided_by}**" if item.decided_by else ""
        when = f" at {item.decided_at:%Y-%m-%d %H:%M:%S} UTC" if item.decided_at else ""
        decided = f"  \n**{item.state}**{by}{when}{value}"
    summary = (f"### Item {item.id} · {item.state}\n**{item.dataset}** v{item.version} · field **{item.field}** "
               f"(`{kind}`) · step **{item.step}** · run `{item.run_id}`  \nSent by the rule: _{item.reason}_"
               f"{decided}  \n{provenance_lines(item.provenance)}")
    fields = "\n".join(f"| {html.escape(str(k))} | {html.escape(_short(v, 200))} |" for k, v in record.items())
    inputs = f"**The record's input fields**\n\n| field | value |\n|---|---|\n{fields}" if record else ""
    edit = gr.update(label=f"New value for {item.field} ({kind}{', one of the choices' if options else ''})",
                     value=suggestion(item))
    offered = gr.update(visible=bool(options), choices=options, value=item.after if item.after in options else None)
    return summary, marked_diff(item.before, item.after), inputs, edit, offered, kind


def suggestion(item: ReviewItem) -> str:
    """What the value box starts from: the proposal, as text."""
    return "" if item.after is None else (item.after if isinstance(item.after, str) else json.dumps(item.after))


def decide_view(access: ReviewAccess, caller: str, action: str, item_id: int | None, text: str | None = None) -> str:
    if not item_id:
        return "⚠️ Choose an item first."
    try:
        if action == "accept":
            item = access.accept(caller, int(item_id))
        elif action == "reject":
            item = access.reject(caller, int(item_id))
        elif action == "edit":
            item = access.edit(caller, int(item_id), text or "")
        else:
            item = access.rerun(caller, int(item_id))
    except Exception as exc:  # decided by someone else (who, when), a value of the wrong type, a rerun that failed
        return f"⚠️ **Item {item_id} was not {_past(action)}**: {getattr(exc, 'message', None) or exc}"
    if action == "rerun":
        return f"✓ Item {item.id} rerun: the new proposal is `{_short(item.after, 200)}` (pending)."
    return f"✓ Item {item.id} {item.state}."


def _past(action: str) -> str:
    return {"accept": "accepted", "reject": "rejected", "edit": "edited", "rerun": "rerun"}[action]


def next_pending(access: ReviewAccess, wanted: QueueFilter, after: int | None) -> int | None:
    """The first pending item of the filter after `after` (wrapping round to the start)."""
    pending = replace(wanted, state="pending")
    for start in (after, None):
        items, _ = access.page(pending, 1, 0, start)
        if items:
            return items[0].id
    return None


def ask_bulk_view(access: ReviewAccess, action: str,
                  wanted: QueueFilter) -> tuple[Any, str, tuple[str, QueueFilter] | None]:
    """The confirmation, stating how many items the filter's pending ones are."""
    pending = replace(wanted, state="pending")
    try:
        count = access.counts(pending).get("pending", 0)
    except Exception as exc:
        return gr.update(visible=False), f"⚠️ {type(exc).__name__}: {exc}", None
    if not count:
        return gr.update(visible=False), "No pending item matches this filter.", None
    where = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in vars(pending).items() if v and k != "state")
    return (gr.update(visible=True), f"**{action.capitalize()} all {count:,} pending item(s)** "
            f"{'of ' + where if where else 'in the whole queue'}?", (action, pending))


def bulk_view(access: ReviewAccess, caller: str, pending: tuple[str, QueueFilter] | None) -> tuple[Any, str]:
    if pending is None:
        return gr.update(visible=False), "⚠️ Nothing to confirm."
    action, wanted = pending
    try:
        done = access.bulk(caller, action, wanted)
    except Exception as exc:
        return gr.update(visible=False), f"⚠️ **The bulk {action} stopped**: {exc}"
    refused = f"; {done.refused:,} refused (first: {done.first_refusal})" if done.refused else ""
    return gr.update(visible=False), f"✓ {done.done:,} item(s) {_past(action)}{refused}."


def promote_view(access: ReviewAccess, caller: str, dataset: str | None) -> str:
    if not _chosen(dataset):
        return "⚠️ Choose the dataset to promote in the filter first."
    try:
        written = access.promote(caller, str(dataset))
    except Exception as exc:
        return f"⚠️ **{dataset} was not promoted**: {getattr(exc, 'message', None) or exc}"
    return f"✓ {written} [Open it in the data dashboard]({access.dataset_url(str(dataset))})"


HEAD = SHORTCUTS + """<style>
.review-diff { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
.review-diff > div { border: 1px solid #d4d4d8; border-radius: 6px; padding: 0.5rem 0.75rem; }
.review-diff h4 { margin: 0 0 0.25rem; font-size: 0.85rem; color: #52525b; }
.review-diff p { margin: 0; white-space: pre-wrap; word-break: break-word; }
.review-diff del.removed { background: #fecaca; color: #7f1d1d; }
.review-diff ins.added { background: #bbf7d0; color: #14532d; text-decoration: none; }
.review-diff .none { color: #a1a1aa; font-style: italic; }
</style>"""


def build_review_panel(access: ReviewAccess) -> gr.Blocks:
    """The panel's Blocks; its page's head should carry `HEAD` (the styles of the differences, and
    the keyboard shortcuts)."""
    with gr.Blocks(title="augment · review") as panel:
        with gr.Row(equal_height=True):
            state = gr.Dropdown(label="State", choices=[ANY, *REVIEW_STATES], value="pending", elem_id="filter-state",
                                scale=1)
            # Typed values are taken too (a run id pasted, gradio_client naming a dataset).
            def facet(label: str, elem_id: str, scale: int) -> gr.Dropdown:
                return gr.Dropdown(label=label, choices=[ANY], value=ANY, allow_custom_value=True, elem_id=elem_id,
                                   scale=scale)

            dataset = facet("Dataset", "filter-dataset", 1)
            run_id = facet("Run", "filter-run", 2)
            step = facet("Step", "filter-step", 1)
            field = facet("Field", "filter-field", 1)
            reason = facet("Rule that sent it", "filter-rule", 2)
        status = gr.Markdown("Loading the queue…", elem_id="review-status")
        queue = gr.Dataframe(headers=QUEUE_COLUMNS, interactive=False, elem_id="review-queue", max_height=320,
                             label="Queue, oldest first (click an item to open it)",
                             column_widths=["6%", "8%", "12%", "10%", "34%", "18%", "12%"])
        with gr.Row():
            previous_page = gr.Button("← Previous 50", scale=0, size="sm", elem_id="queue-previous")
            next_page = gr.Button("Next 50 →", scale=0, size="sm", elem_id="queue-next")
            bulk_accept = gr.Button("Accept all pending…", scale=0, size="sm", elem_id="bulk-accept")
            bulk_reject = gr.Button("Reject all pending…", scale=0, size="sm", variant="stop",
                                    elem_id="bulk-reject")
            promote_button = gr.Button("Promote the dataset", scale=0, size="sm", elem_id="review-promote")
        with gr.Row(visible=False, elem_id="bulk-confirm") as confirm:
            question = gr.Markdown("")
            yes = gr.Button("Yes, do it", variant="primary", scale=0, elem_id="bulk-confirm-yes")
            no = gr.Button("No", scale=0, elem_id="bulk-confirm-no")
        pending_bulk = gr.State(None)
        offset = gr.State(0)
        outcome = gr.Markdown("", elem_id="review-outcome")
        chosen = gr.Number(label="Item", value=None, precision=0, visible=False, elem_id="review-item-id")
        summary = gr.Markdown(NOTHING_CHOSEN, elem_id="review-item")
        diff = gr.HTML("", elem_id="review-diff")
        with gr.Row(equal_height=True):
            accept = gr.Button("Accept (a)", variant="primary", scale=0, elem_id="review-accept")
            reject = gr.Button("Reject (r)", variant="stop", scale=0, elem_id="review-reject")
            rerun = gr.Button("Rerun", scale=0, elem_id="review-rerun")
            next_item = gr.Button("Next pending (n)", scale=0, elem_id="review-next")
        with gr.Row(equal_height=True):
            value = gr.Textbox(label="New value", elem_id="review-value", scale=4)
            save_edit = gr.Button("Keep this value", scale=0, elem_id="review-edit")
        options = gr.Radio(label="The field's values", choices=[], visible=False, elem_id="review-choices")
        kind = gr.State("")
        inputs = gr.Markdown("", elem_id="review-record")

        filters = [state, dataset, run_id, step, field, reason]
        listing = [status, queue, offset]
        showing = [summary, diff, inputs, value, options, kind]
        refreshed = [summary, diff, inputs, value, options, kind]

        def read(*chosen_filters: str | None) -> tuple[str, Any, int]:
            return queue_view(access, queue_filter(*chosen_filters), 0)

        def paged(delta: int) -> Callable[..., tuple[str, Any, int]]:
            def page(at: int, *chosen_filters: str | None) -> tuple[str, Any, int]:
                return queue_view(access, queue_filter(*chosen_filters), max(0, (at or 0) + delta))
            return page

        def reread(at: int, *chosen_filters: str | None) -> tuple[str, Any, int]:
            return queue_view(access, queue_filter(*chosen_filters), at or 0)

        def show(item_id: float | None) -> tuple[str, str, str, Any, Any, str]:
            return item_view(access, int(item_id) if item_id else None)

        def refresh(item_id: float | None) -> tuple[str, str, str, Any, Any, str]:
            """The item shown after a decision; the value box keeps what the decision put there
            (only its label follows the item)."""
            summary_, diff_, inputs_, edit, options_, kind_ = item_view(access, int(item_id) if item_id else None)
            label = gr.update(label=edit["label"]) if isinstance(edit, dict) and "label" in edit else gr.skip()
            return summary_, diff_, inputs_, label, options_, kind_

        def decider(action: str) -> Callable[..., tuple[str, int | None, Any]]:
            """(outcome, the item to show next, the value box): on to the next pending item (its
            proposal in the box) after a decision; on the same one after a rerun (its new proposal)
            or a refusal (the value as typed, to fix). `refresh` then shows the item."""
            def decide(item_id: float | None, text: str | None, state_: str | None, dataset_: str | None,
                       run_: str | None, step_: str | None, field_: str | None, reason_: str | None,
                       request: gr.Request) -> tuple[str, int | None, Any]:
                current = int(item_id) if item_id else None
                message = decide_view(access, request.username or "", action, current, text)
                if not message.startswith("✓"):
                    return message, current, gr.skip()
                if action == "rerun" and current is not None:
                    return message, current, suggestion(access.item(current))
                wanted = queue_filter(state_, dataset_, run_, step_, field_, reason_)
                after = next_pending(access, wanted, current)
                if after is None:
                    return message + " No pending item is left in this filter.", None, ""
                return message, after, suggestion(access.item(after))
            return decide

        def go_next(item_id: float | None, *chosen_filters: str | None) -> tuple[Any, str]:
            """(the next pending item, what to say): a store that failed to answer is said, and the
            item shown stays."""
            try:
                found = next_pending(access, queue_filter(*chosen_filters), int(item_id) if item_id else None)
            except Exception as exc:  # noqa: BLE001 - shown to the reviewer, who can press again
                return gr.skip(), f"⚠️ The next pending item could not be read: {type(exc).__name__}: {exc}"
            return found, "" if found is not None else "No pending item is left in this filter."

        def ask_accept_all(*chosen_filters: str | None) -> tuple[Any, str, Any]:
            return ask_bulk_view(access, "accept", queue_filter(*chosen_filters))

        def ask_reject_all(*chosen_filters: str | None) -> tuple[Any, str, Any]:
            return ask_bulk_view(access, "reject", queue_filter(*chosen_filters))

        def do_bulk(pending: tuple[str, QueueFilter] | None, request: gr.Request) -> tuple[Any, str]:
            return bulk_view(access, request.username or "", pending)

        def promote(chosen_dataset: str | None, request: gr.Request) -> str:
            return promote_view(access, request.username or "", chosen_dataset)

        def pick(event: gr.SelectData) -> int:
            return int(event.row_value[0])

        panel.load(read, filters, listing, api_name="review_queue")
        panel.load(lambda: facet_updates(access), None, [dataset, run_id, step, field, reason],
                   api_visibility="private")
        for control in filters:
            control.input(read, filters, listing, api_visibility="private")
        previous_page.click(paged(-PAGE), [offset, *filters], listing, api_visibility="private")
        next_page.click(paged(PAGE), [offset, *filters], listing, api_visibility="private")
        # The item is shown by whatever chose it (not on every change of `chosen`: a decision that
        # moves on shows the next item through `refresh`, and would otherwise read it twice).
        queue.select(pick, None, chosen, api_visibility="private").then(show, chosen, showing, api_name="open_item")
        for button, action in ((accept, "accept"), (reject, "reject"), (save_edit, "edit"), (rerun, "rerun")):
            button.click(decider(action), [chosen, value, *filters], [outcome, chosen, value],
                         api_name=f"{action}_item").then(
                refresh, chosen, refreshed, show_progress="hidden").then(
                reread, [offset, *filters], listing, show_progress="hidden")
        next_item.click(go_next, [chosen, *filters], [chosen, outcome], api_name="next_pending").then(
            show, chosen, showing, show_progress="hidden")
        options.input(lambda picked: picked, options, value, api_visibility="private")
        bulk_accept.click(ask_accept_all, filters, [confirm, question, pending_bulk], api_visibility="private")
        bulk_reject.click(ask_reject_all, filters, [confirm, question, pending_bulk], api_visibility="private")
        yes.click(do_bulk, pending_bulk, [confirm, outcome], api_name="bulk_decide").then(
            reread, [offset, *filters], listing, show_progress="hidden").then(
            refresh, chosen, refreshed, show_progress="hidden")
        no.click(lambda: (gr.update(visible=False), None), None, [confirm, pending_bulk], api_visibility="private")
        promote_button.click(promote, dataset, outcome, api_name="promote")
    return panel
