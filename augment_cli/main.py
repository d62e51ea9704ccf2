"""`augment`: run, validate and inspect workflows; start the local cluster and Serve apps.

Exit codes: 0 success, 1 a run or command failed, 2 usage or spec errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from augment_core.settings import Settings
from augment_core.store import RunRecord, open_store
from pipelines.spec import SpecError, load_spec, preflight

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A command that cannot do what was asked; printed without a traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _cluster_address(settings: Settings) -> str | None:
    """The configured cluster, else the one `augment cluster up` started, else None.
    Never Ray's own guess: after a crashed cluster it hangs on the address left in /tmp/ray."""
    from cluster.local import LocalCluster, is_up

    address = settings.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        return address
    default = LocalCluster()
    return default.gcs_address if is_up(default) else None


def _connect_ray(address: str | None) -> None:
    """Join `address`, or start a private local instance for this command when it is None."""
    import ray

    if ray.is_initialized():  # already joined (a test, an embedding program)
        return
    if address is None:
        # Private to this command: no token to set up, as with `augment cluster up`.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address=address or "local", logging_level=logging.WARNING, log_to_driver=True,
             configure_logging=True, include_dashboard=False if address is None else None)


# commands -----------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    spec = load_spec(args.spec)
    print(f"{args.spec}: ok — workflow {spec.name} v{spec.version}, {len(spec.schema_.fields)} fields, "
          f"{len(spec.steps)} step(s), sink {spec.sink.dataset}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from actors.runs import resumable_run, resume_run, start_run

    spec = load_spec(args.spec)
    preflight(spec, args.spec)
    store = open_store(settings)
    store.reap_stale_runs(settings.stale_after_seconds)
    _resolve_source(spec, store)
    _connect_ray(_cluster_address(settings))
    earlier = None if args.fresh else resumable_run(settings, spec)
    if earlier is not None:  # the same job submitted again after its driver was lost: carry it on
        record, (coordinator, final) = resume_run(settings, earlier.id)
        run_id = record.id
        print(f"run {run_id} resumed: workflow {spec.name} v{spec.version} (its last attempt ended:"
              f" {earlier.error}; --fresh starts a new run instead)", file=sys.stderr, flush=True)
    else:
        run_id, (coordinator, final) = start_run(settings, spec, os.path.abspath(args.spec))
        # Progress goes to stderr: stdout holds the result (plain or --json) alone.
        print(f"run {run_id} started: workflow {spec.name} v{spec.version}", file=sys.stderr, flush=True)
    return _wait_for_run(store, run_id, coordinator, final, args.json)


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    from actors.runs import ResumeError, refuse_unresumable, resume_run

    store = open_store(settings)
    store.reap_stale_runs(settings.stale_after_seconds)
    try:
        refuse_unresumable(store.find_run(args.run_id))  # before starting Ray for nothing
        _connect_ray(_cluster_address(settings))
        record, (coordinator, final) = resume_run(settings, args.run_id)
    except ResumeError as exc:
        raise CommandError(str(exc)) from None
    print(f"run {record.id} resumed: workflow {record.workflow} v{record.workflow_version}"
          f" (resume {record.resumes})", file=sys.stderr, flush=True)
    return _wait_for_run(store, record.id, coordinator, final, args.json)


def _wait_for_run(store: Any, run_id: str, coordinator: Any, final: Any, as_json: bool) -> int:
    """Wait for a run's coordinator to end it; Ctrl-C or SIGTERM cancel the run."""
    import ray

    received: list[str] = []  # Ray re-raises the interrupt without its text: remember the signal

    def stop(signum: int, _frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt(received[-1])

    signal.signal(signal.SIGTERM, stop)
    try:
        ray.get(final)
    except KeyboardInterrupt:
        reason = f"cancelled: driver interrupted ({received[-1] if received else 'SIGINT'})"
        try:
            ray.get(coordinator.cancel.remote(reason), timeout=30)
        except Exception:  # the coordinator is gone or stuck: the run ends here all the same
            store.finish_run(run_id, "cancelled", error=reason)
        ray.kill(coordinator, no_restart=True)
        print(f"run {run_id} interrupted", file=sys.stderr)
        _print_run(store.get_run(run_id), as_json)
        return EXIT_FAILED
    except Exception as exc:  # the coordinator itself died
        from actors.run_coordinator import describe_error

        store.finish_run(run_id, "failed", error=f"run coordinator lost: {describe_error(exc)}")
    record = store.get_run(run_id)
    _print_run(record, as_json)
    return EXIT_OK if record.status == "succeeded" else EXIT_FAILED


def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.plan import quiet_ray_data
    from pipelines.preview import preview

    spec = load_spec(args.spec)
    preflight(spec, args.spec)
    _resolve_source(spec, open_store(settings))
    _connect_ray(_cluster_address(settings))
    quiet_ray_data()
    source_fs = None
    if getattr(spec.source, "path", "").startswith("s3://"):
        from augment_core.storage import StoragePaths

        source_fs = StoragePaths(settings).filesystem(spec.source.path)[0]
    result = preview(spec, rows=args.rows, filesystem=source_fs)
    budget = spec.budget.max_usd if spec.budget else None
    if args.json:
        print(json.dumps({
            "rows_in": result.rows_in, "valid": result.valid, "samples": result.samples,
            "steps": [vars(s) for s in result.steps], "cost_max_usd": round(result.cost_max_usd, 6),
            "budget_usd": budget,
        }, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(f"preview of {spec.name} v{spec.version}: the requests of the first {args.rows} valid record(s); nothing is sent")
    if not result.steps:
        print("  (no step of this workflow calls a provider)")
    for sample in result.samples:
        print(f"\n--- record {sample['record']} · step {sample['step']}")
        print(json.dumps(sample["request"], indent=2, ensure_ascii=False))
    print(f"\nestimate for the whole input: {result.rows_in} records in, {result.valid} valid before the"
          " duplicate-key check (upper bound: every reply at max_tokens, no cache hit)")
    if result.steps:
        print(f"  {'STEP':<24} {'PROVIDER':<14} {'MODEL':<18} {'REQUESTS':>9} {'TOKENS IN':>10} {'OUT (MAX)':>10} {'COST (MAX)':>11}")
        for s in result.steps:
            unbuildable = f"  ({s.unbuildable} cannot be built)" if s.unbuildable else ""
            print(f"  {s.step[:24]:<24} {s.provider[:14]:<14} {(s.model or '-')[:18]:<18} {s.requests:>9} "
                  f"{s.tokens_in:>10} {s.tokens_out_max:>10} {'$%.4f' % s.cost_max_usd:>11}{unbuildable}")
    limit = f" (budget ${budget:g})" if budget is not None else ""
    print(f"  total: at most ${result.cost_max_usd:.4f}{limit}")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    store.reap_stale_runs(settings.stale_after_seconds)
    records = store.list_runs(limit=args.limit, workflow=args.workflow)
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
        return EXIT_OK
    if not records:
        print("no runs yet")
        return EXIT_OK
    print(f"{'RUN ID':<26} {'WORKFLOW':<22} {'STATUS':<10} {'IN':>8} {'VALID':>8} {'QUAR.':>7}  CREATED")
    for r in records:
        c = r.counts
        print(f"{r.id:<26} {r.workflow[:22]:<22} {r.status:<10} {c.get('in', 0):>8} {c.get('valid', 0):>8} "
              f"{c.get('quarantined', 0):>7}  {r.created_at:%Y-%m-%d %H:%M:%S}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from actors.runs import live_view

    store = open_store(settings)
    store.reap_stale_runs(settings.stale_after_seconds)
    try:
        record = store.find_run(args.run_id)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    if record.status in ("pending", "running"):
        address = _cluster_address(settings)
        if address:  # live progress from the coordinator; without a cluster, the stored view
            _connect_ray(address)
            record = live_view(record)
    _print_run(record, args.json)
    return EXIT_OK


def cmd_datasets(args: argparse.Namespace, settings: Settings) -> int:
    versions = open_store(settings).list_dataset_versions(args.dataset)
    if args.json:
        print(json.dumps([v.model_dump(mode="json", by_alias=True) for v in versions], indent=2))
        return EXIT_OK
    if not versions:
        print(f"no versions of {args.dataset}" if args.dataset else "no datasets yet")
        return EXIT_OK if not args.dataset else EXIT_FAILED
    print(f"{'DATASET':<28} {'VERSION':>7} {'ROWS':>9}  {'RUN':<26} {'CREATED':<19}  PATH")
    for v in versions:
        imported = f"  (imported from {v.imported_from})" if v.imported_from else ""
        print(f"{v.dataset[:28]:<28} {v.version:>7} {v.row_count:>9}  {v.run_id:<26} {v.created_at:%Y-%m-%d %H:%M:%S}  {v.path}{imported}")
    return EXIT_OK


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from augment_core.storage import StoragePaths
    from augment_core.store import PathCatalogued
    from pipelines.import_schema import ImportRefused, detect_kind, key_schema
    from pipelines.importer import import_dataset
    from pipelines.plan import quiet_ray_data
    from pipelines.sources import SourceError
    from pipelines.spec import FileSource

    try:
        if len(args.delimiter) != 1:
            raise ImportRefused(f"--delimiter: expected one character, got {args.delimiter!r}")
        path = args.path if "://" in args.path else os.path.abspath(args.path)
        source = FileSource(kind=detect_kind(path, args.format), path=path, delimiter=args.delimiter)
        if args.schema_from:
            schema = load_spec(args.schema_from).schema_
        else:
            key = [k.strip() for k in args.key.split(",") if k.strip()]
            if not key:
                raise ImportRefused("--key: name at least one column")
            schema = key_schema(source, key, *StoragePaths(settings).filesystem(source.path))
    except ImportRefused as exc:
        raise CommandError(f"import refused: {exc}", EXIT_USAGE) from None
    _connect_ray(_cluster_address(settings))
    quiet_ray_data()
    try:
        result = import_dataset(settings, source, args.dataset, schema)
    except ImportRefused as exc:
        raise CommandError(f"import refused: {exc}", EXIT_USAGE) from None
    except (SourceError, PathCatalogued) as exc:
        raise CommandError(f"import failed: {exc}") from None
    except Exception as exc:  # Ray wraps a reader's error: name ours, as a run does
        from actors.run_coordinator import describe_error

        raise CommandError(f"import failed: {describe_error(exc)}") from None
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
        return EXIT_OK
    print(f"imported {result.imported_from} as {result.dataset} v{result.version} (read-only)")
    print(f"  records      in {result.rows_in} · valid {result.valid} · quarantined {result.quarantined}")
    print(f"  output       {result.path}")
    print(f"  quarantine   {result.quarantine_path}")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace, settings: Settings) -> int:
    from augment_core.storage import StoragePaths
    from pipelines.diff import as_json, diff_versions

    store = open_store(settings)
    try:
        before = store.get_dataset_version(args.dataset, args.v1)
        after = store.get_dataset_version(args.dataset, args.v2)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    result = diff_versions(StoragePaths(settings), args.dataset, (before.version, before.path),
                           (after.version, after.path), limit=args.limit, with_provenance=args.with_provenance)
    if args.json:
        print(json.dumps(as_json(result), indent=2, ensure_ascii=False, default=str))
        return EXIT_OK
    print(f"{args.dataset}: v{result.before} ({before.row_count} records) -> v{result.after} ({after.row_count} records)")
    print(f"  added {result.added} · removed {result.removed} · changed {result.changed} · unchanged {result.unchanged}")
    if result.columns_added or result.columns_removed:
        print(f"  columns added {result.columns_added or '-'} · removed {result.columns_removed or '-'}")
    if result.changed_fields:
        print("  changed fields: " + ", ".join(f"{k} ({n})" for k, n in sorted(result.changed_fields.items())))
    for change in result.changes:
        print(f"  ~ {change.record_uuid}")
        for name, (old, new) in change.fields.items():
            print(f"      {name}: {old!r} -> {new!r}")
    for record_id in result.added_ids:
        print(f"  + {record_id}")
    for record_id in result.removed_ids:
        print(f"  - {record_id}")
    shown = len(result.changes) + len(result.added_ids) + len(result.removed_ids)
    if shown < result.changed + result.added + result.removed:
        print(f"  (first {args.limit} of each kind shown: --limit N for more, --json for machines)")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    import ray

    from actors.runs import CancelError, cancel_run

    if not ray.is_initialized():
        address = _cluster_address(settings)
        if address is None:
            raise CommandError("no cluster is up here: set AUGMENT_RAY_ADDRESS to the run's cluster")
        _connect_ray(address)
    try:
        record = cancel_run(settings, args.run_id)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    except CancelError as exc:
        raise CommandError(str(exc)) from None
    _print_run(record, args.json)
    return EXIT_OK if record.status == "cancelled" else EXIT_FAILED


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    from augment_core.events import follow_run

    try:
        run_id = open_store(settings).find_run(args.run_id).id
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    try:
        for events in follow_run(settings, run_id, args.after, follow=args.follow):
            for event in events:
                print(event.model_dump_json() if args.json else _describe_event(event), flush=True)
    except KeyboardInterrupt:  # Ctrl-C ends a tail: nothing went wrong
        pass
    return EXIT_OK


def cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    from cluster import local

    cluster = local.LocalCluster(dashboard_port=args.dashboard_port, gcs_port=args.port, num_cpus=args.num_cpus)
    if args.action == "up":
        if local.is_up(cluster):
            print(f"a cluster is already up: dashboard and Jobs API at {cluster.dashboard_url}")
            return EXIT_OK
        local.up(settings, cluster)
        print(f"cluster up: dashboard and Jobs API at {cluster.dashboard_url}, GCS at {cluster.gcs_address}")
        print(f"  submit: ray job submit --address {cluster.dashboard_url} --working-dir . -- "
              "augment run configs/workflows/organisations.yaml")
    elif args.action == "down":
        local.down()
        print("cluster down")
    else:
        up = local.is_up(cluster)
        print(f"cluster {'up' if up else 'down'} ({cluster.dashboard_url})")
        return EXIT_OK if up else EXIT_FAILED
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from serve_apps import deploy

    address = args.address
    try:
        if args.stop:
            deploy.stop(address)
            print("Serve applications removed")
            return EXIT_OK
        config = deploy.load_config(args.config, prefix=args.prefix, port=args.port)
        urls = deploy.deploy(address, config)
    except deploy.ServeConfigError as exc:
        raise CommandError(f"serve config rejected: {exc}", EXIT_USAGE) from None
    except deploy.DeployError as exc:
        raise CommandError(str(exc)) from None
    print("Serve applications running:")
    for name, url in urls.items():
        print(f"  {name:<12} {url}")
    return EXIT_OK


def _resolve_source(spec: Any, store: Any) -> None:
    """Pin a dataset source to its catalogued version now, so that a missing one is refused here."""
    from pipelines.dataset_source import resolve_dataset_source
    from pipelines.sources import SourceError

    try:
        resolve_dataset_source(spec, store)
    except SourceError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None


# output -------------------------------------------------------------------------------------
def _describe_event(event: Any) -> str:
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


def _print_run(record: RunRecord, as_json: bool) -> None:
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
                  f" · {usage.get('tokens_out', 0)} out · {usage.get('failed', 0)} failed · {usage.get('skipped', 0)} skipped")
    print("  steps")
    for step in record.steps:
        error = f" — {step.error}" if step.error and step.error != record.error else ""
        print(f"    {step.name:<28} {step.state:<10} {step.rows:>8} rows{error}")
    if record.error:
        print(f"  error        {record.error}")


# parser -------------------------------------------------------------------------------------
def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    return parse


_positive_int, _non_negative_int = _int_at_least(1), _int_at_least(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="augment",
        description="Augment records on Ray: validate them, then add trustworthy columns.",
        epilog="Configuration comes from AUGMENT_* environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a workflow spec on Ray (locally or as a Ray job)")
    p.add_argument("spec", help="workflow YAML, e.g. configs/workflows/organisations.yaml")
    p.add_argument("--json", action="store_true", help="print the final run as JSON")
    p.add_argument("--fresh", action="store_true",
                   help="start a new run even if the last run of this very spec lost its driver (default: resume it)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("resume", help="carry on a failed or cancelled run from what it durably wrote")
    p.add_argument("run_id", help="a run id or an unambiguous prefix of one")
    p.add_argument("--json", action="store_true", help="print the final run as JSON")
    p.set_defaults(handler=cmd_resume)

    p = sub.add_parser("validate", help="check a workflow spec without running anything")
    p.add_argument("spec")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("preview", help="print the requests a run would send, and its cost estimate, sending nothing")
    p.add_argument("spec")
    p.add_argument("--rows", type=_positive_int, default=3, help="sample records to show (default 3)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_preview)

    p = sub.add_parser("runs", help="list recent runs")
    p.add_argument("--limit", type=_positive_int, default=20)
    p.add_argument("--workflow", help="only runs of this workflow")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_runs)

    p = sub.add_parser("status", help="one run: status, counts, steps and error")
    p.add_argument("run_id", help="a run id or an unambiguous prefix of one")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("events", help="a run's events (progress, failed records, reviews); --follow tails them live")
    p.add_argument("run_id", help="a run id or an unambiguous prefix of one")
    p.add_argument("--follow", "-f", action="store_true", help="wait for new events until the run finishes")
    p.add_argument("--after", type=_non_negative_int, default=0, metavar="N", help="only events after sequence number N")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=cmd_events)

    p = sub.add_parser("cancel", help="stop a pending or running run: it ends 'cancelled', keeping what it wrote")
    p.add_argument("run_id", help="a run id or an unambiguous prefix of one")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("datasets", help="catalogued datasets and their versions")
    p.add_argument("dataset", nargs="?", help="only this dataset")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_datasets)

    p = sub.add_parser("import", help="validate files and catalogue them as a new, read-only version of a dataset")
    p.add_argument("path", help="a CSV, JSON Lines or Parquet file, a folder of them, or an s3:// URL")
    p.add_argument("--dataset", required=True, help="the dataset that gets the new version")
    schema = p.add_mutually_exclusive_group(required=True)
    schema.add_argument("--schema-from", metavar="WORKFLOW.yaml", help="validate against this workflow's schema")
    schema.add_argument("--key", metavar="COL[,COL]",
                        help="every column of the file as it is (text for CSV/JSON Lines), keyed by these")
    p.add_argument("--format", choices=["csv", "jsonl", "parquet"], help="default: from the file name")
    p.add_argument("--delimiter", default=",", help="CSV only (default ,)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser("diff", help="records added, removed and changed between two versions of a dataset")
    p.add_argument("dataset")
    p.add_argument("v1", type=_positive_int, help="the earlier version")
    p.add_argument("v2", type=_positive_int, help="the later version")
    p.add_argument("--limit", type=_positive_int, default=20, help="records of each kind to show (default 20)")
    p.add_argument("--with-provenance", action="store_true", help="compare the *_provenance columns too")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_diff)

    from augment_cli import review_commands  # imports this module: only once it is loaded

    review_commands.add_parsers(sub)
    from augment_cli import stream_commands

    stream_commands.add_parsers(sub)

    p = sub.add_parser("cluster", help="start or stop a local Ray head node (dashboard and Jobs API)")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--dashboard-port", type=int, default=8265)
    p.add_argument("--port", type=int, default=6380, help="GCS port (default 6380; 6379 is Redis's)")
    p.add_argument("--num-cpus", type=int, default=None)
    p.set_defaults(handler=cmd_cluster)

    p = sub.add_parser("serve", help="deploy the API and panels on Ray Serve (configs/serve.yaml)")
    p.add_argument("--config", default="configs/serve.yaml")
    p.add_argument("--prefix", default=None, help="route prefix for every app, e.g. /augment")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default from the config)")
    p.add_argument("--address", default="http://127.0.0.1:8265", help="dashboard address of the cluster")
    p.add_argument("--stop", action="store_true", help="remove the applications instead")
    p.set_defaults(handler=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except Exception as exc:
        print(f"augment: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return args.handler(args, settings)
    except SpecError as exc:
        print(f"augment: spec rejected: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(f"augment: {exc}", file=sys.stderr)
        return exc.code
    except Exception as exc:  # an unreachable store or cluster, a failed `ray start`...: one line, no traceback
        text = str(exc).strip()
        detail = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
        print(f"augment {args.command}: {detail}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
