"""`augment gc`: retention, once, now (augment_core/retention.py): old events, cluster-stream
entries, dead letters, result-cache entries and audit entries removed, each kind by its
AUGMENT_RETENTION_* setting. The cluster's reaper runs the same every AUGMENT_GC_INTERVAL_MINUTES."""

from __future__ import annotations

import argparse
import dataclasses

from augment_cli.common import EXIT_FAILED, EXIT_OK, SubParsers, add_json_flag
from augment_cli.output import print_gc, print_json
from augment_core.audit import local_actor, record
from augment_core.retention import collect_garbage
from augment_core.settings import Settings
from augment_core.store import open_store


def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    report = collect_garbage(settings, dry_run=args.dry_run)
    if not args.dry_run:
        record(open_store(settings), local_actor(), "gc", "retention", "failed" if report.errors else "ok",
               report.summary())
    print_json(dataclasses.asdict(report)) if args.json else print_gc(report)
    return EXIT_FAILED if report.errors else EXIT_OK


def add_parsers(sub: SubParsers) -> None:
    p = sub.add_parser("gc", help="remove old events, stream entries, dead letters, cache and audit entries",
                       description=__doc__)
    p.add_argument("--dry-run", action="store_true", help="count what would go, remove nothing")
    add_json_flag(p)
    p.set_defaults(handler=cmd_gc)
