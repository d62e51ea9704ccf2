"""The data dashboard: datasets and their versions (rows, which run or import made them), an
overview of a version (per column its type, fill rate, distinct values, top values or a histogram;
per augmenting step its ok / error / skipped share; per field what review decided), its records
page by page with a choice of columns and a filter, the diff of two versions with the changed
cells marked, downloads, and plots of runs and review over time.

Built from functions the panel's application hands in (`DataAccess`), so it knows nothing of
Serve, Ray or the store; a failure to load is an error beside the last data that did load.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import gradio as gr
import pandas as pd

from augment_core.store import DatasetVersion, RunRecord
from pipelines.operations.diff import DatasetDiff
from pipelines.operations.version_profile import VersionProfile

VERSION_COLUMNS = ["version", "rows", "created (UTC)", "made by"]
OVERVIEW_COLUMNS = ["column", "type", "filled", "distinct", "top values / range"]
STEP_COLUMNS = ["step", "ok", "error", "skipped"]
REVIEW_COLUMNS = ["field", "pending", "accepted", "edited", "rejected"]
PAGE = 50
MAX_CELL = 200
NO_VERSION = "Choose a dataset and a version."


@dataclass(frozen=True)
class RecordFilter:
    column: str | None = None
    value: str | None = None  # rows whose column, as text, equals this


@dataclass(frozen=True)
class DataAccess:
    """What the dashboard reads; each raises an exception whose message says why it could not."""

    versions: Callable[[], list[DatasetVersion]]  # every published version of every dataset
    profile: Callable[[str, int], VersionProfile]  # (dataset, version), kept per version
    decisions: Callable[[str, int], dict[str, dict[str, int]]]  # field -> state -> items
    records: Callable[[str, int, list[str] | None, RecordFilter, int, int], tuple[list[dict[str, Any]], int]]
    diff: Callable[[str, int, int], DatasetDiff]
    runs: Callable[[], list[RunRecord]]  # recent runs, newest first
    decided_per_day: Callable[[], list[tuple[str, str, int]]]
    quarantine_reasons: Callable[[], list[tuple[str, int]]]  # the 10 most frequent, "field: reason"
    spend_per_day: Callable[[], list[tuple[str, str, str, float]]]  # (day, provider account, workflow, USD)
    download_url: Callable[[str, int, str, RecordFilter], str]  # (dataset, version, format, filter)


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"


def made_by(version: DatasetVersion) -> str:
    if version.imported_from:
        return f"import of {version.imported_from}"
    if version.run_id.startswith("promote-"):
        return f"promote ({version.run_id})"
    return f"run {version.run_id}"


# datasets and versions ------------------------------------------------------------------------
def catalogue_view(access: DataAccess, dataset: str | None, version: int | None = None) -> tuple[str, Any, Any, Any]:
    """(status, versions table, dataset choices, version choices: `version` if the dataset has it,
    else its newest); on failure all but the status stay."""
    try:
        found = access.versions()
    except Exception as exc:
        return f"⚠️ **Could not read the datasets**: {type(exc).__name__}: {exc}", gr.skip(), gr.skip(), gr.skip()
    names = sorted({v.dataset for v in found})
    if not names:
        return "No dataset has a version yet: run a workflow (`make demo`).", pd.DataFrame(columns=VERSION_COLUMNS), \
            gr.update(choices=[]), gr.update(choices=[])
    chosen = dataset if dataset in names else names[0]
    mine = sorted((v for v in found if v.dataset == chosen), key=lambda v: v.version, reverse=True)
    rows = [[v.version, f"{v.row_count:,}", _when(v.created_at), made_by(v)] for v in mine]
    status = f"{len(names)} dataset(s) · **{chosen}**: {len(mine)} version(s), the newest v{mine[0].version}"
    versions = [v.version for v in mine]
    return (status, pd.DataFrame(rows, columns=VERSION_COLUMNS), gr.update(choices=names, value=chosen),
            gr.update(choices=versions, value=version if version in versions else versions[0]))


# overview -------------------------------------------------------------------------------------
def _share(n: int, of: int) -> str:
    return f"{n / of:.0%}" if of else "—"


def overview_table(profile: VersionProfile) -> pd.DataFrame:
    rows = []
    for c in profile.columns:
        if c.minimum is not None:
            described = f"{c.minimum:g} … {c.maximum:g}, mean {c.mean:.4g}"
        else:
            described = ", ".join(f"{_cell(v)[:40]} ({n:,})" for v, n in c.top)
        distinct = f"more than {c.distinct:,}" if c.distinct_capped else f"{c.distinct:,}"
        rows.append([c.name, c.type, f"{_share(c.filled, profile.rows)} ({c.filled:,})", distinct, described])
    return pd.DataFrame(rows, columns=OVERVIEW_COLUMNS)


def fill_plot(profile: VersionProfile) -> pd.DataFrame:
    return pd.DataFrame({"column": [c.name for c in profile.columns],
                         "filled %": [round(100 * c.filled / profile.rows, 1) if profile.rows else 0.0
                                      for c in profile.columns]})


def overview_view(access: DataAccess, dataset: str | None,
                  version: int | None) -> tuple[str, Any, Any, Any, Any, Any]:
    """(status, columns table, fill plot, steps table, review table, histogram choices)."""
    if not dataset or not version:
        return NO_VERSION, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    try:
        profile = access.profile(dataset, int(version))
        decisions = access.decisions(dataset, int(version))
    except Exception as exc:
        return (f"⚠️ **Could not read {dataset} v{version}**: {type(exc).__name__}: {exc}", gr.skip(), gr.skip(),
                gr.skip(), gr.skip(), gr.skip())
    steps = pd.DataFrame([[name, *(f"{_share(n, profile.rows)} ({n:,})" for n in counts.values())]
                          for name, counts in profile.steps.items()], columns=STEP_COLUMNS)
    review = pd.DataFrame([[name, *counts.values()] for name, counts in sorted(decisions.items())],
                          columns=REVIEW_COLUMNS)
    troubled = [name for name, counts in profile.steps.items() if counts.get("error")]
    status = (f"**{dataset} v{version}**: {profile.rows:,} rows, {len(profile.columns)} columns "
              f"(read in {profile.seconds:.2f} s, kept for this version)"
              + (f" · ⚠ steps with errors: {', '.join(troubled)}" if troubled else ""))
    numbers = [c.name for c in profile.columns if c.histogram]
    return (status, overview_table(profile), fill_plot(profile), steps, review,
            gr.update(choices=numbers, value=numbers[0] if numbers else None, visible=bool(numbers)))


def histogram_view(access: DataAccess, dataset: str | None, version: int | None, column: str | None) -> Any:
    if not dataset or not version or not column:
        return gr.update(visible=False)
    try:
        profile = access.profile(dataset, int(version))
    except Exception:  # the overview says why
        return gr.skip()
    found = next((c for c in profile.columns if c.name == column), None)
    if found is None or not found.histogram:
        return gr.update(visible=False)
    # By the bins' lower bounds, numbers: a plot orders them, where it would put "1–1.2" after "1.8–2".
    bins = pd.DataFrame({"from": [low for low, _, _ in found.histogram], "rows": [n for *_, n in found.histogram]})
    return gr.update(value=bins, visible=True, title=f"{column}: rows per bin (by its lower bound)")


# records --------------------------------------------------------------------------------------
def records_view(access: DataAccess, dataset: str | None, version: int | None, columns: list[str] | None,
                 column: str | None, value: str | None, offset: int) -> tuple[str, Any, int, Any]:
    """(status, table, offset, download links)."""
    if not dataset or not version:
        return NO_VERSION, gr.skip(), 0, ""
    wanted = RecordFilter(column or None, value if column else None)
    try:
        rows, total = access.records(dataset, int(version), columns or None, wanted, PAGE, max(0, offset))
    except Exception as exc:
        return f"⚠️ **Could not read the records**: {type(exc).__name__}: {exc}", gr.skip(), offset, gr.skip()
    table = pd.DataFrame([{k: _cell(v) for k, v in r.items()} for r in rows]) if rows else pd.DataFrame(
        columns=columns or [])
    where = f" where {column} = {value!r}" if wanted.column else ""
    shown = f"rows {offset + 1:,}–{offset + len(rows):,} of {total:,}{where}" if rows else f"no rows{where}"
    links = " · ".join(f"[Download {'the slice' if wanted.column else 'the version'} as {fmt.upper()}]"
                       f"({access.download_url(dataset, int(version), fmt, wanted)})" for fmt in ("csv", "parquet"))
    return shown, table, offset, links


# diff -----------------------------------------------------------------------------------------
def diff_view(access: DataAccess, dataset: str | None, before: int | None, after: int | None) -> tuple[str, str]:
    """(summary, HTML table of the changed records, changed cells marked)."""
    if not dataset or not before or not after:
        return "Choose two versions.", ""
    if int(before) == int(after):
        return "⚠️ Choose two different versions.", ""
    try:
        found = access.diff(dataset, int(before), int(after))
    except Exception as exc:
        return f"⚠️ **Could not compare them**: {type(exc).__name__}: {exc}", ""
    fields = ", ".join(f"{name} ({n:,})" for name, n in sorted(found.changed_fields.items(), key=lambda x: -x[1]))
    summary = (f"**v{found.before} → v{found.after}**: {found.added:,} added, {found.removed:,} removed, "
               f"{found.changed:,} changed, {found.unchanged:,} unchanged"
               + (f"  \nChanged fields: {fields}" if fields else "")
               + (f"  \nColumns added: {', '.join(found.columns_added)}" if found.columns_added else "")
               + (f"  \nColumns removed: {', '.join(found.columns_removed)}" if found.columns_removed else ""))
    if not found.changes:
        return summary, ""
    rows = "".join(
        f"<tr><td><code>{html.escape(c.record_uuid[:12])}</code></td><td>{html.escape(name)}</td>"
        f'<td class="before">{html.escape(_cell(old))}</td><td class="after">{html.escape(_cell(new))}</td></tr>'
        for c in found.changes for name, (old, new) in c.fields.items())
    return summary, ('<table class="version-diff"><thead><tr><th>record</th><th>field</th><th>before</th>'
                     f"<th>after</th></tr></thead><tbody>{rows}</tbody></table>")


# activity -------------------------------------------------------------------------------------
def activity_view(access: DataAccess) -> tuple[str, Any, Any, Any, Any, Any]:
    """(status, records per run over time, quarantine reasons, spend per day by provider and by
    workflow, review decisions per day)."""
    try:
        runs, decided = access.runs(), access.decided_per_day()
        reasons, spend = access.quarantine_reasons(), access.spend_per_day()
    except Exception as exc:
        failed = f"⚠️ **Could not read the activity**: {type(exc).__name__}: {exc}"
        return failed, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    points = []
    for run in reversed(runs):
        for kind in ("valid", "quarantined", "failed"):
            points.append({"run created (UTC)": run.created_at.astimezone(dt.timezone.utc).replace(tzinfo=None),
                           "records": int((run.counts or {}).get(kind, 0)), "kind": kind})
    records = pd.DataFrame(points, columns=["run created (UTC)", "records", "kind"])
    why = pd.DataFrame([{"reason": r if len(r) <= 60 else r[:59] + "…", "records": n} for r, n in reasons],
                       columns=["reason", "records"])
    costs = pd.DataFrame(spend, columns=["day", "provider", "workflow", "USD"])
    by_provider = costs.groupby(["day", "provider"], as_index=False)["USD"].sum()
    by_workflow = costs.groupby(["day", "workflow"], as_index=False)["USD"].sum()
    review = pd.DataFrame([{"day": day, "items": n, "state": state} for day, state, n in decided],
                          columns=["day", "items", "state"])
    status = (f"{len(runs)} recent run(s); {float(costs['USD'].sum()):.6f} USD of provider calls in 30 days; "
              f"{sum(n for *_, n in decided):,} review decision(s) in 30 days")
    return status, records, why, by_provider, by_workflow, review


STYLE = """<style>
table.version-diff { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
table.version-diff th, table.version-diff td { border: 1px solid #d4d4d8; padding: 0.25rem 0.5rem; text-align: left;
  vertical-align: top; word-break: break-word; }
table.version-diff td.before { background: #fee2e2; }
table.version-diff td.after { background: #dcfce7; }
</style>"""


def download_query(fmt: str, wanted: RecordFilter) -> str:
    query = {"format": fmt, **({"column": wanted.column, "value": wanted.value or ""} if wanted.column else {})}
    return urlencode(query, quote_via=quote)


def build_data_panel(access: DataAccess) -> gr.Blocks:
    """The panel's Blocks; its page's head should carry `STYLE`."""
    with gr.Blocks(title="augment · data") as panel:
        # Typed values are taken too (a name pasted, gradio_client naming a dataset and versions).
        with gr.Row(equal_height=True):
            dataset = gr.Dropdown(label="Dataset", choices=[], value=None, allow_custom_value=True,
                                  elem_id="data-dataset", scale=2)
            version = gr.Dropdown(label="Version", choices=[], value=None, allow_custom_value=True,
                                  elem_id="data-version", scale=1)
        status = gr.Markdown("Loading the datasets…", elem_id="data-status")
        with gr.Tabs():
            with gr.Tab("Overview", id="overview", elem_id="tab-overview"):
                overview_status = gr.Markdown(NO_VERSION, elem_id="overview-status")
                columns = gr.Dataframe(headers=OVERVIEW_COLUMNS, interactive=False, elem_id="overview-columns",
                                       label="Columns", wrap=True, max_height=420,
                                       column_widths=["18%", "9%", "11%", "9%", "53%"])
                fill = gr.BarPlot(x="column", y="filled %", title="Fill rate per column", y_lim=[0, 100],
                                  elem_id="overview-fill", height=260)
                with gr.Row():
                    steps = gr.Dataframe(headers=STEP_COLUMNS, interactive=False, elem_id="overview-steps",
                                         label="Augmenting steps: rows ok, error, skipped")
                    review = gr.Dataframe(headers=REVIEW_COLUMNS, interactive=False, elem_id="overview-review",
                                          label="Review decisions per field (items of this version and before)")
                numeric = gr.Dropdown(label="Histogram of", choices=[], value=None, visible=False,
                                      elem_id="overview-numeric")
                histogram = gr.BarPlot(x="from", y="rows", visible=False, elem_id="overview-histogram", height=240)
                versions = gr.Dataframe(headers=VERSION_COLUMNS, interactive=False, elem_id="data-versions",
                                        label="Versions of the dataset, newest first", max_height=260)
            with gr.Tab("Records", id="records", elem_id="tab-records"):
                with gr.Row(equal_height=True):
                    shown_columns = gr.Dropdown(label="Columns (empty: all)", choices=[], value=[], multiselect=True,
                                                elem_id="records-columns", scale=3)
                    filter_column = gr.Dropdown(label="Filter: column", choices=[], value=None, elem_id="records-by",
                                                scale=1)
                    filter_value = gr.Textbox(label="equals", elem_id="records-value", scale=1)
                    previous_page = gr.Button("← Previous 50", scale=0, size="sm")
                    next_page = gr.Button("Next 50 →", scale=0, size="sm", elem_id="records-next")
                records_status = gr.Markdown("", elem_id="records-status")
                records = gr.Dataframe(interactive=False, elem_id="records-table", max_height=480, wrap=True,
                                       label="Records")
                downloads = gr.Markdown("", elem_id="records-downloads")
                offset = gr.State(0)
            with gr.Tab("Diff", id="diff", elem_id="tab-diff"):
                with gr.Row(equal_height=True):
                    before = gr.Dropdown(label="Before", choices=[], value=None, allow_custom_value=True,
                                     elem_id="diff-before", scale=1)
                    after = gr.Dropdown(label="After", choices=[], value=None, allow_custom_value=True,
                                    elem_id="diff-after", scale=1)
                    compare = gr.Button("Compare", variant="primary", scale=0, elem_id="diff-compare")
                diff_summary = gr.Markdown("Choose two versions.", elem_id="diff-summary")
                diff_table = gr.HTML("", elem_id="diff-table")
            with gr.Tab("Activity", id="activity", elem_id="tab-activity") as activity_tab:
                activity_status = gr.Markdown("", elem_id="activity-status")
                per_run = gr.ScatterPlot(x="run created (UTC)", y="records", color="kind", elem_id="activity-runs",
                                         title="Records per run: valid, quarantined, failed", height=280)
                reasons = gr.BarPlot(x="records", y="reason", elem_id="activity-reasons", height=280, sort="-x",
                                     title="Why records were quarantined (top 10, recent runs)")
                with gr.Row():
                    by_provider = gr.BarPlot(x="day", y="USD", color="provider", elem_id="activity-spend-provider",
                                             title="Spend per day by provider account", height=260)
                    by_workflow = gr.BarPlot(x="day", y="USD", color="workflow", elem_id="activity-spend-workflow",
                                             title="Spend per day by workflow", height=260)
                per_day = gr.BarPlot(x="day", y="items", color="state", elem_id="activity-review",
                                     title="Review decisions per day", height=240)

        def read_catalogue(chosen: str | None) -> tuple[str, Any, Any, Any]:
            return catalogue_view(access, chosen)

        def first_catalogue(chosen: str | None, request: gr.Request) -> tuple[str, Any, Any, Any]:
            """`?dataset=<name>&version=<n>` in the page's address opens that version."""
            asked = request.query_params if request is not None else {}
            number = str(asked.get("version") or "")
            return catalogue_view(access, chosen or asked.get("dataset"), int(number) if number.isdigit() else None)

        def read_overview(chosen: str | None, at: int | None) -> tuple[str, Any, Any, Any, Any, Any]:
            return overview_view(access, chosen, at)

        def read_histogram(chosen: str | None, at: int | None, column: str | None) -> Any:
            return histogram_view(access, chosen, at, column)

        def column_choices(chosen: str | None, at: int | None) -> tuple[Any, Any, Any, Any]:
            if not chosen or not at:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            try:
                names = [c.name for c in access.profile(chosen, int(at)).columns]
                numbers = sorted({v.version for v in access.versions() if v.dataset == chosen})
            except Exception:  # the overview says why
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            older = numbers[-2] if len(numbers) > 1 else numbers[-1]
            return (gr.update(choices=names, value=[]), gr.update(choices=["", *names], value=""),
                    gr.update(choices=numbers, value=older), gr.update(choices=numbers, value=int(at)))

        def read_records(chosen: str | None, at: int | None, wanted: list[str] | None, by: str | None,
                         value: str | None, start: int = 0) -> tuple[str, Any, int, Any]:
            return records_view(access, chosen, at, wanted, by, value, start)

        def paged(delta: int) -> Callable[..., tuple[str, Any, int, Any]]:
            def page(chosen: str | None, at: int | None, wanted: list[str] | None, by: str | None,
                     value: str | None, start: int) -> tuple[str, Any, int, Any]:
                return records_view(access, chosen, at, wanted, by, value, max(0, (start or 0) + delta))
            return page

        def read_diff(chosen: str | None, old: int | None, new: int | None) -> tuple[str, str]:
            return diff_view(access, chosen, old, new)

        def read_activity() -> tuple[str, Any, Any, Any, Any, Any]:
            return activity_view(access)

        catalogue = [status, versions, dataset, version]
        overview = [overview_status, columns, fill, steps, review, numeric]
        record_inputs = [dataset, version, shown_columns, filter_column, filter_value]
        record_outputs = [records_status, records, offset, downloads]
        def show_version(listen: Any, named: bool = False) -> None:
            """`listen` (a trigger's, or a step's `.then`) reads the chosen version: its overview,
            then the columns of the records tab and the diff's versions, its records, a histogram."""
            def api(name: str) -> dict[str, Any]:
                return {"api_name": name} if named else {"api_visibility": "private"}

            listen(read_overview, [dataset, version], overview, **api("version_overview")).then(
                column_choices, [dataset, version], [shown_columns, filter_column, before, after],
                api_visibility="private").then(
                read_records, record_inputs, record_outputs, **api("read_records")).then(
                read_histogram, [dataset, version, numeric], histogram, api_visibility="private")

        show_version(panel.load(first_catalogue, dataset, catalogue, api_name="list_versions").then, named=True)
        show_version(dataset.input(read_catalogue, dataset, catalogue, api_visibility="private").then)
        show_version(version.input)
        numeric.input(read_histogram, [dataset, version, numeric], histogram, api_visibility="private")
        for trigger in (shown_columns.input, filter_column.input, filter_value.submit):
            trigger(read_records, record_inputs, record_outputs, api_visibility="private")
        previous_page.click(paged(-PAGE), [*record_inputs, offset], record_outputs, api_visibility="private")
        next_page.click(paged(PAGE), [*record_inputs, offset], record_outputs, api_visibility="private")
        compare.click(read_diff, [dataset, before, after], [diff_summary, diff_table], api_name="diff_versions")
        activity_tab.select(read_activity, None, [activity_status, per_run, reasons, by_provider, by_workflow, per_day],
                            api_name="activity")
    return panel
