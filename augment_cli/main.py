"""`augment`: run, validate and inspect workflows; start the local cluster and Serve apps.

Wiring only: each noun's commands live in their own module, which adds its parsers here.
Exit codes: 0 success, 1 a run or command failed, 2 usage or spec errors.
"""

from __future__ import annotations

import argparse
import sys

from augment_cli import cluster, datasets, gc, review, runs, serve, stream, users, workflows
from augment_cli.common import EXIT_FAILED, EXIT_USAGE, CommandError, Handler
from augment_core.logs import configure_logging
from augment_core.settings import Settings
from pipelines.spec.errors import SpecError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="augment",
        description="Augment records on Ray: validate them, then add trustworthy columns.",
        epilog="Configuration comes from AUGMENT_* environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for noun in (runs, workflows, datasets, review, stream, cluster, serve, users, gc):
        noun.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except Exception as exc:
        print(f"augment: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_format)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
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
