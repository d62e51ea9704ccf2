"""`augment validate` and `augment preview`: a workflow checked, and the requests it would send."""

from __future__ import annotations

import argparse

from augment_cli.common import (
    EXIT_OK,
    SubParsers,
    add_json_flag,
    cluster_address,
    connect_ray,
    positive_int,
    resolve_source,
)
from augment_cli.output import print_preview
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import open_store
from pipelines.workflows.loader import load_spec, preflight


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    spec = load_spec(args.spec)
    print(f"{args.spec}: ok — workflow {spec.name} v{spec.version}, {len(spec.schema_.fields)} fields, "
          f"{len(spec.steps)} step(s), sink {spec.sink.dataset}")
    return EXIT_OK


def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.engine.batch import quiet_ray_data
    from pipelines.operations.preview import preview

    spec = load_spec(args.spec)
    preflight(spec, args.spec)
    resolve_source(spec, open_store(settings))
    connect_ray(cluster_address(settings))
    quiet_ray_data()
    result = preview(spec, rows=args.rows, paths=StoragePaths(settings))
    print_preview(spec, result, args.rows, args.json)
    return EXIT_OK


def add_parsers(sub: SubParsers) -> None:
    p = sub.add_parser("validate", help="check a workflow spec without running anything")
    p.add_argument("spec")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("preview", help="print the requests a run would send, and its cost estimate, sending nothing")
    p.add_argument("spec")
    p.add_argument("--rows", type=positive_int, default=3, help="sample records to show (default 3)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_preview)
