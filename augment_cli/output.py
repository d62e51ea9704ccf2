"""What commands print: one function per kind of result, as text for people or JSON for programs.

Text goes to stdout (progress and errors go to stderr, from the commands), so that `--json`
output can be piped as it is.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from augment_core.audit import AuditEntry
from augment_core.events import Event
from augment_core.identity import ApiKey, User
from augment_core.retention import GcReport
from augment_core.reviews import ReviewItem
from augment_core.store import DatasetVersion, RunRecord, StepState
from pipelines.operations.diff import DatasetDiff
from pipelines.spec.workflow import WorkflowSpec

if TYPE_CHECKING:  # for annotations only: these modules import Ray, which printing does not need
    from pipelines.operations.importer import ImportResult
    from pipelines.operations.preview_result import Preview


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def print_run(record: RunRecord, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record.model_dump(mode="json") | {"duration_seconds": record.duration_seconds}, indent=2))
        return
    c = record.counts
    took = f" in {record.duration_seconds:.1f}s" if record.duration_seconds is not None else ""
    print(f"run {record.id}: {record.status}{took}")
    print(f"  workflow     {record.workflow} v{record.workflow_version} ({record.spec_path})")
    print(f"  records      in {c.get('in', 0)} · valid {c.get('valid', 0)} · quarantined {c.get('quarantined', 0)}"
          f" · augmented {c.get('augmented', 0)} · failed {c.get('failed', 0)} · skipped {c.get('skipped', 0)}")
    out = record.output
    if out.get("partial"):
        when = "so far" if record.status in ("pending", "running") else "before the run stopped"
        print(f"  output       {out['rows_written']} record(s) written {when}, not catalogued: {out['path']}")
    elif out:
        print(f"  output       {out['dataset']} v{out['version']}: {out['path']}")
        print(f"  quarantine   {out['quarantine_path']}")
        if out.get("csv_path"):
            print(f"  csv export   {out['csv_path']}")
    cost = record.cost or {}
    if cost.get("steps"):
        budget = f" of a ${cost['budget_usd']:g} budget" if cost.get("budget_usd") is not None else ""
        exhausted = " (exhausted: remaining records skipped)" if cost.get("budget_exhausted") else ""
        print(f"  cost         ${cost.get('total_usd', 0):.6f}{budget}{exhausted}")
        for name, usage in cost["steps"].items():
            print(f"    {name:<28} ${usage.get('cost_usd', 0):.6f} · {usage.get('calls', 0)} calls"
                  f" · {usage.get('cache_hits', 0)} cached · {usage.get('tokens_in', 0)} tokens in"
                  f" · {usage.get('tokens_out', 0)} out · {usage.get('failed', 0)} failed"
                  f" · {usage.get('skipped', 0)} skipped")
    if out.get("review_items"):
        print(f"  review       {out['review_items']} item(s) queued: augment review list --run {record.id}")
    print("  steps")
    for step in record.steps:
        error = f" — {step.error}" if step.error and step.error != record.error else ""
        work = f" · {step.work} of work" if step.work else ""
        print(f"    {step.name:<28} {step.state:<10} {step.rows:>8} rows{work}{step_outcome(step)}{error}")
    if record.error:
        print(f"  error        {record.error}")


def step_outcome(step: StepState) -> str:
    """', with 3 failed and 2 skipped' for a step some records did not get through; '' otherwise."""
    parts = [f"{n} {what}" for n, what in ((step.failed, "failed"), (step.skipped, "skipped")) if n]
    return f", with {' and '.join(parts)}" if parts else ""


def print_runs(records: list[RunRecord]) -> None:
    if not records:
        print("no runs yet")
        return
    print(f"{'RUN ID':<26} {'WORKFLOW':<22} {'STATUS':<10} {'IN':>8} {'VALID':>8} {'QUAR.':>7}  CREATED")
    for r in records:
        c = r.counts
        print(f"{r.id:<26} {r.workflow[:22]:<22} {r.status:<10} {c.get('in', 0):>8} {c.get('valid', 0):>8} "
              f"{c.get('quarantined', 0):>7}  {r.created_at:%Y-%m-%d %H:%M:%S}")


def print_stream(record: RunRecord, consuming: bool, as_json: bool) -> None:
    print_run(record, as_json)
    if not as_json:
        out = record.output
        print(f"  stream       {out.get('stream')} · group {out.get('group')}")
        print(f"  consumer     {'running on this cluster' if consuming else 'not running'}")


def describe_event(event: Event) -> str:
    """One line per event: sequence, time, type, and what happened."""
    data = event.data
    if event.type == "step.progress":
        what = " · ".join(f"{name} {s['state']} {s['rows']}" for name, s in data.get("steps", {}).items())
    elif event.type == "record.failed":
        what = f"{data.get('record_uuid')} at step {data.get('step')}: {data.get('reason')}"
    elif event.type == "run.finished":
        counts = " · ".join(f"{k} {v}" for k, v in (data.get("counts") or {}).items())
        what = f"{data.get('status')}: {counts}" + (f" — {data['error']}" if data.get("error") else "")
    elif event.type == "run.started":
        what = f"workflow {data.get('workflow')} v{data.get('version')}"
    else:
        what = json.dumps(data, ensure_ascii=False, default=str)
    return f"{event.seq:>6}  {event.at[:19]}  {event.type:<15} {what}"


def print_versions(versions: list[DatasetVersion]) -> None:
    print(f"{'DATASET':<28} {'VERSION':>7} {'ROWS':>9}  {'RUN':<26} {'CREATED':<19}  PATH")
    for v in versions:
        imported = f"  (imported from {v.imported_from})" if v.imported_from else ""
        print(f"{v.dataset[:28]:<28} {v.version:>7} {v.row_count:>9}  {v.run_id:<26} "
              f"{v.created_at:%Y-%m-%d %H:%M:%S}  {v.path}{imported}")


def print_review_items(items: list[ReviewItem], total: int, offset: int) -> None:
    if not items:
        print("no review items" + (f" (of {total})" if total else ""))
        return
    print(f"{'ID':>7}  {'STATE':<9} {'DATASET':<20} {'V':>3}  {'RECORD':<36} {'FIELD':<18} PROPOSED")
    for i in items:
        shown = i.decided_value if i.state == "edited" else i.after
        print(f"{i.id:>7}  {i.state:<9} {i.dataset[:20]:<20} {i.version:>3}  {i.record_uuid[:36]:<36} "
              f"{i.field[:18]:<18} {json.dumps(shown, ensure_ascii=False)[:60]}")
    if offset + len(items) < total:
        print(f"  ({len(items)} of {total} shown: --offset {offset + len(items)} for more)")


def print_review_item(item: ReviewItem, as_json: bool) -> None:
    if as_json:
        print(json.dumps(item.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    print(f"review item {item.id}: {item.state}")
    print(f"  record     {item.record_uuid} of {item.dataset} v{item.version} (run {item.run_id})")
    print(f"  field      {item.field} (step {item.step}; {item.reason})")
    print(f"  before     {json.dumps(item.before, ensure_ascii=False)}")
    print(f"  proposed   {json.dumps(item.after, ensure_ascii=False)}")
    if item.state in ("accepted", "edited"):
        print(f"  kept       {json.dumps(item.decided_value, ensure_ascii=False)}")


def print_preview(spec: WorkflowSpec, result: Preview, rows: int, as_json: bool) -> None:
    budget = spec.budget.max_usd if spec.budget else None
    if as_json:
        print_json({
            "rows_in": result.rows_in, "valid": result.valid, "samples": result.samples,
            "steps": [vars(s) for s in result.steps], "cost_max_usd": round(result.cost_max_usd, 6),
            "budget_usd": budget,
        })
        return
    print(f"preview of {spec.name} v{spec.version}: the requests of the first {rows} valid record(s); nothing is sent")
    if not result.steps:
        print("  (no step of this workflow calls a provider)")
    for sample in result.samples:
        print(f"\n--- record {sample['record']} · step {sample['step']}")
        print(json.dumps(sample["request"], indent=2, ensure_ascii=False))
    print(f"\nestimate for the whole input: {result.rows_in} records in, {result.valid} valid before the"
          " duplicate-key check (upper bound: every reply at max_tokens, no cache hit)")
    if result.steps:
        print(f"  {'STEP':<24} {'PROVIDER':<14} {'MODEL':<18} {'REQUESTS':>9} {'TOKENS IN':>10} {'OUT (MAX)':>10}"
              f" {'COST (MAX)':>11}")
        for s in result.steps:
            unbuildable = f"  ({s.unbuildable} cannot be built)" if s.unbuildable else ""
            print(f"  {s.step[:24]:<24} {s.provider[:14]:<14} {(s.model or '-')[:18]:<18} {s.requests:>9} "
                  f"{s.tokens_in:>10} {s.tokens_out_max:>10} {'$%.4f' % s.cost_max_usd:>11}{unbuildable}")
    limit = f" (budget ${budget:g})" if budget is not None else ""
    print(f"  total: at most ${result.cost_max_usd:.4f}{limit}")


def print_import(result: ImportResult) -> None:
    print(f"imported {result.imported_from} as {result.dataset} v{result.version} (read-only)")
    print(f"  records      in {result.rows_in} · valid {result.valid} · quarantined {result.quarantined}")
    print(f"  output       {result.path}")
    print(f"  quarantine   {result.quarantine_path}")


def print_diff(diff: DatasetDiff, before: DatasetVersion, after: DatasetVersion, limit: int) -> None:
    print(f"{diff.dataset}: v{diff.before} ({before.row_count} records) -> v{diff.after} ({after.row_count} records)")
    print(f"  added {diff.added} · removed {diff.removed} · changed {diff.changed} · unchanged {diff.unchanged}")
    if diff.columns_added or diff.columns_removed:
        print(f"  columns added {diff.columns_added or '-'} · removed {diff.columns_removed or '-'}")
    if diff.changed_fields:
        print("  changed fields: " + ", ".join(f"{k} ({n})" for k, n in sorted(diff.changed_fields.items())))
    for change in diff.changes:
        print(f"  ~ {change.record_uuid}")
        for name, (old, new) in change.fields.items():
            print(f"      {name}: {old!r} -> {new!r}")
    for record_id in diff.added_ids:
        print(f"  + {record_id}")
    for record_id in diff.removed_ids:
        print(f"  - {record_id}")
    shown = len(diff.changes) + len(diff.added_ids) + len(diff.removed_ids)
    if shown < diff.changed + diff.added + diff.removed:
        print(f"  (first {limit} of each kind shown: --limit N for more, --json for machines)")


def _when(value: dt.datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value is not None else "-"


def print_users(users: list[User]) -> None:
    if not users:
        print("no users: create the first admin with `augment users create-admin NAME`")
        return
    print(f"{'user':<24} {'role':<9} {'state':<9} {'password':<9} created")
    for u in users:
        print(f"{u.name:<24} {u.role.value:<9} {'disabled' if u.disabled else 'enabled':<9} "
              f"{'yes' if u.has_password else 'no':<9} {_when(u.created_at)}")


def print_keys(keys: list[ApiKey]) -> None:
    if not keys:
        print("no API keys")
        return
    # Rate and daily spend cap: the key's own, or '-' for the gateway's defaults.
    print(f"{'prefix':<13} {'user':<18} {'name':<20} {'state':<8} {'rate/min':>8} {'USD/day':>9} {'expires':<16}"
          " last used")
    for k in keys:
        rate = "-" if k.rate_per_minute is None else str(k.rate_per_minute)
        spend = "-" if k.daily_spend_usd is None else f"{k.daily_spend_usd:g}"
        print(f"{k.prefix:<13} {k.user:<18} {k.name[:20]:<20} {k.state:<8} {rate:>8} {spend:>9} "
              f"{_when(k.expires_at):<16} {_when(k.last_used_at)}")


def print_audit(entries: list[AuditEntry]) -> None:
    if not entries:
        print("the audit log is empty")
        return
    for e in entries:
        detail = f" — {e.detail}" if e.detail else ""
        print(f"{e.id:>6} {e.at:%Y-%m-%d %H:%M:%S} {e.actor:<28} {e.action:<16} {e.outcome:<7} {e.target}{detail}")


GC_KINDS = {"events": "events of ended runs", "stream": "cluster-wide stream entries", "dead_letters": "dead letters",
            "cache": "result-cache entries", "audit": "audit entries"}


def print_gc(report: GcReport) -> None:
    print("would remove (dry run):" if report.dry_run else "removed:")
    for kind, count in report.removed.items():
        failed = f"  (failed: {report.errors[kind]})" if kind in report.errors else ""
        print(f"  {GC_KINDS.get(kind, kind):<30} {count:>9}{failed}")
    for kind, error in report.errors.items():
        if kind not in report.removed:
            print(f"  {kind}: failed: {error}")
    for note in report.held:
        print(f"  kept: {note}")
