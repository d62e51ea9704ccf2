"""`augment stream start|stop|status`: a workflow's Redis stream, consumed by a detached actor."""

from __future__ import annotations

import argparse
import os

from augment_cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    SubParsers,
    add_json_flag,
    cluster_address,
    connect_ray,
)
from augment_cli.output import print_stream
from augment_core.settings import Settings
from pipelines.workflows.loader import load_spec


def cmd_stream(args: argparse.Namespace, settings: Settings) -> int:
    import ray

    from actors.streams import StreamError, start_stream, stop_stream, stream_status

    if args.action == "start":
        spec = load_spec(args.spec)  # a bad spec is a usage error before any cluster is joined
    if not ray.is_initialized():
        address = cluster_address(settings)
        if address is None and args.action != "status":
            # A private Ray instance ends with this command, and the consumer with it.
            raise CommandError("no cluster is up here: a stream consumer outlives this command, so it runs on a"
                               " cluster (`augment cluster up`, or AUGMENT_RAY_ADDRESS)")
        if address is not None:
            connect_ray(address)
    try:
        if args.action == "start":
            record = start_stream(settings, spec, os.path.abspath(args.spec))
            print_stream(record, True, args.json)
            return EXIT_OK if record.status == "running" else EXIT_FAILED
        if args.action == "stop":
            record = stop_stream(settings, args.name, timeout=args.timeout)
            print_stream(record, False, args.json)
            return EXIT_OK if record.status == "succeeded" else EXIT_FAILED
        status = stream_status(settings, args.name)
    except StreamError as exc:
        raise CommandError(str(exc)) from None
    if status.run is None:
        raise CommandError(f"workflow {args.name} has no stream runs")
    print_stream(status.run, status.consuming, args.json)
    return EXIT_OK


def add_parsers(sub: SubParsers) -> None:
    p = sub.add_parser("stream", help="consume a workflow's Redis stream continuously: start, stop, status")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("start", help="start the workflow's consumer (a detached Ray actor) as a new run")
    q.add_argument("spec", help="workflow YAML whose source is a redis_stream")
    add_json_flag(q)
    q = actions.add_parser("stop", help="finish the micro-batch in hand, catalogue the output and stop")
    q.add_argument("name", help="the workflow's name")
    q.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for the micro-batch in hand (default 60); then it ends cancelled")
    add_json_flag(q)
    q = actions.add_parser("status", help="the workflow's latest stream run, and whether its consumer runs")
    q.add_argument("name", help="the workflow's name")
    add_json_flag(q)
    p.set_defaults(handler=cmd_stream)
