"""`augment run|resume|runs|status|cancel|events`: runs started, carried on, listed, read and stopped."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

import pyarrow.fs as pafs

from augment_cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    SubParsers,
    add_json_flag,
    add_run_id,
    cluster_address,
    connect_ray,
    join_cluster_or_fail,
    non_negative_int,
    positive_int,
    reap_when_no_cluster,
    resolve_source,
)
from augment_cli.output import describe_event, print_json, print_run, print_runs
from augment_core.audit import local_actor
from augment_core.audit import record as audit
from augment_core.errors import describe_error
from augment_core.events import follow_run
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import RUN_ID, MetadataStore, open_store
from pipelines.workflows.loader import load_spec, preflight

if TYPE_CHECKING:  # annotations only: importing Ray costs a second this module does not need for --help
    from ray import ObjectRef
    from ray.actor import ActorHandle


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from actors.runs import resumable_run, resume_run, start_run

    spec = load_spec(args.spec)
    preflight(spec, args.spec)
    store = open_store(settings)
    resolve_source(spec, store)
    connect_ray(cluster_address(settings))
    earlier = None if args.fresh or args.run_id else resumable_run(settings, spec)
    if earlier is not None:  # the same job submitted again after its driver was lost: carry it on
        record, (coordinator, final) = resume_run(settings, earlier.id)
        run_id = record.id
        print(f"run {run_id} resumed: workflow {spec.name} v{spec.version} (its last attempt ended:"
              f" {earlier.error}; --fresh starts a new run instead)", file=sys.stderr, flush=True)
        audit(store, local_actor(), "run.resume", run_id, detail=f"workflow {spec.name} v{spec.version}")
    else:
        run_id, (coordinator, final) = start_run(settings, spec, os.path.abspath(args.spec), run_id=args.run_id)
        audit(store, local_actor(), "run.start", run_id, detail=f"workflow {spec.name} v{spec.version}")
        # Progress goes to stderr: stdout holds the result (plain or --json) alone.
        print(f"run {run_id} started: workflow {spec.name} v{spec.version}", file=sys.stderr, flush=True)
    return _wait_for_run(settings, store, run_id, coordinator, final, args.json)


def run_id_arg(value: str) -> str:
    if not RUN_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a run id such as 20260102-030405-0a1b2c3d")
    return value


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    from actors.runs import ResumeError, refuse_unresumable, resume_run

    store = open_store(settings)
    try:
        refuse_unresumable(store.find_run(args.run_id))  # before starting Ray for nothing
        connect_ray(cluster_address(settings))
        record, (coordinator, final) = resume_run(settings, args.run_id)
    except ResumeError as exc:
        audit(store, local_actor(), "run.resume", args.run_id, "refused", str(exc))
        raise CommandError(str(exc)) from None
    audit(store, local_actor(), "run.resume", record.id, detail=f"resume {record.resumes}")
    print(f"run {record.id} resumed: workflow {record.workflow} v{record.workflow_version}"
          f" (resume {record.resumes})", file=sys.stderr, flush=True)
    return _wait_for_run(settings, store, record.id, coordinator, final, args.json)


def _wait_for_run(
    settings: Settings, store: MetadataStore, run_id: str, coordinator: ActorHandle, final: ObjectRef, as_json: bool
) -> int:
    """Wait for a run's coordinator to end it; Ctrl-C or SIGTERM cancel the run."""
    import ray

    received: list[str] = []  # Ray re-raises the interrupt without its text: remember the signal

    def stop(signum: int, _frame: FrameType | None) -> None:
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
        print_run(store.get_run(run_id), as_json)
        return EXIT_FAILED
    except Exception as exc:  # the coordinator itself died
        store.finish_run(run_id, "failed", error=f"run coordinator lost: {describe_error(exc)}")
    record = store.get_run(run_id)
    print_run(record, as_json)
    if record.status == "failed":
        _point_at_error_log(StoragePaths(settings), run_id)
    return EXIT_OK if record.status == "succeeded" else EXIT_FAILED


def _point_at_error_log(paths: StoragePaths, run_id: str) -> None:
    path = paths.run_log(run_id)
    fs, local = paths.filesystem(path)
    if fs.get_file_info(local).type != pafs.FileType.NotFound:
        print(f"full error with its traceback: {path}", file=sys.stderr)


def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    reap_when_no_cluster(settings, store)
    records = store.list_runs(limit=args.limit, workflow=args.workflow)
    if args.json:
        print_json([r.model_dump(mode="json") for r in records])
    else:
        print_runs(records)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    reap_when_no_cluster(settings, store)
    try:
        record = store.find_run(args.run_id)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    if record.status in ("pending", "running"):
        address = cluster_address(settings)
        if address:  # live progress from the coordinator; without a cluster, the stored view
            from actors.runs import live_view

            connect_ray(address)
            record = live_view(record)
    print_run(record, args.json)
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from actors.runs import CancelError, cancel_run

    join_cluster_or_fail(settings, "no cluster is up here: set AUGMENT_RAY_ADDRESS to the run's cluster")
    store = open_store(settings)
    try:
        record = cancel_run(settings, args.run_id)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    except CancelError as exc:
        audit(store, local_actor(), "run.cancel", args.run_id, "refused", str(exc))
        raise CommandError(str(exc)) from None
    audit(store, local_actor(), "run.cancel", record.id, detail=f"now {record.status}")
    print_run(record, args.json)
    return EXIT_OK if record.status == "cancelled" else EXIT_FAILED


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    try:
        run_id = open_store(settings).find_run(args.run_id).id
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    try:
        for events in follow_run(settings, run_id, args.after, follow=args.follow):
            for event in events:
                print(event.model_dump_json() if args.json else describe_event(event), flush=True)
    except KeyboardInterrupt:  # Ctrl-C ends a tail: nothing went wrong
        pass
    return EXIT_OK


def add_parsers(sub: SubParsers) -> None:
    p = sub.add_parser("run", help="run a workflow spec on Ray (locally or as a Ray job)")
    p.add_argument("spec", help="workflow YAML, e.g. configs/workflows/organisations.yaml")
    add_json_flag(p, "print the final run as JSON")
    p.add_argument("--fresh", action="store_true",
                   help="start a new run even if the last run of this very spec lost its driver (default: resume it)")
    p.add_argument("--run-id", type=run_id_arg, default=None,
                   help="the new run's id, chosen by the caller (as the workflow editor does, to link to the run"
                        " it launched); implies --fresh")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("resume", help="carry on a failed or cancelled run from what it durably wrote")
    add_run_id(p)
    add_json_flag(p, "print the final run as JSON")
    p.set_defaults(handler=cmd_resume)

    p = sub.add_parser("runs", help="list recent runs")
    p.add_argument("--limit", type=positive_int, default=20)
    p.add_argument("--workflow", help="only runs of this workflow")
    add_json_flag(p)
    p.set_defaults(handler=cmd_runs)

    p = sub.add_parser("status", help="one run: status, counts, steps and error")
    add_run_id(p)
    add_json_flag(p)
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("events", help="a run's events (progress, failed records, reviews); --follow tails them live")
    add_run_id(p)
    p.add_argument("--follow", "-f", action="store_true", help="wait for new events until the run finishes")
    p.add_argument("--after", type=non_negative_int, default=0, metavar="N", help="only events after sequence number N")
    add_json_flag(p, "one JSON object per line")
    p.set_defaults(handler=cmd_events)

    p = sub.add_parser("cancel", help="stop a pending or running run: it ends 'cancelled', keeping what it wrote")
    add_run_id(p)
    add_json_flag(p)
    p.set_defaults(handler=cmd_cancel)
