"""`augment review list|accept|edit|reject|rerun` and `augment promote`: the review queue and its decisions."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from augment_cli.common import (
    EXIT_OK,
    CommandError,
    SubParsers,
    add_json_flag,
    non_negative_int,
    positive_int,
)
from augment_cli.output import print_json, print_review_item, print_review_items
from augment_core.audit import local_actor, record
from augment_core.reviews import REVIEW_STATES, ReviewConflict, list_items
from augment_core.settings import Settings
from augment_core.store import open_store
from pipelines.inference.context import RunContext
from pipelines.operations.promote import promote
from pipelines.review.decisions import DecisionLookup
from pipelines.spec.workflow import WorkflowSpec

if TYPE_CHECKING:  # annotations only: the folder imports the engine, and with it Ray
    from pipelines.workflows.folder import WorkflowFolder


def cmd_review(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.operations import review_actions

    if args.action == "list":
        return _list(args, settings)
    actor, store, target = local_actor(), open_store(settings), f"review item {args.id}"
    by = actor.removesuffix(" (local)")
    try:
        if args.action == "accept":
            item = review_actions.accept(settings, args.id, by)
        elif args.action == "reject":
            item = review_actions.reject(settings, args.id, by)
        elif args.action == "edit":
            item = review_actions.edit(settings, args.id, _value(args.value), by)
        else:
            item = review_actions.rerun(settings, _workflows(settings), args.id)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    except (ReviewConflict, review_actions.RerunFailed) as exc:
        record(store, actor, f"review.{args.action}", target, "refused", str(exc))
        raise CommandError(str(exc)) from None
    except review_actions.InvalidValue as exc:
        record(store, actor, f"review.{args.action}", target, "refused", str(exc))
        raise CommandError(f"value rejected: {exc}") from None
    record(store, actor, f"review.{args.action}", target, detail=f"now {item.state}")
    print_review_item(item, args.json)
    return EXIT_OK


def _value(text: str) -> Any:
    """VALUE as JSON (42, true, "42"), or as the text itself when it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _workflows(settings: Settings) -> WorkflowFolder:
    """The workflows a rerun finds its item's workflow in, keeping the decisions of their reviews."""
    from pipelines.workflows.folder import WorkflowFolder

    def context_for(spec: WorkflowSpec) -> RunContext:
        return RunContext(providers=spec.providers, settings=settings, decisions=DecisionLookup(settings, spec.name),
                          interactive=True)

    return WorkflowFolder(settings.workflows_dir, context_for=context_for)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    items, total = list_items(open_store(settings), dataset=args.dataset, state=args.state, run_id=args.run,
                              workflow=args.workflow, limit=args.limit, offset=args.offset)
    if args.json:
        print_json({"items": [i.model_dump(mode="json") for i in items], "total": total})
    else:
        print_review_items(items, total, args.offset)
    return EXIT_OK


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    try:
        result = promote(settings, args.dataset, args.from_version)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    record(open_store(settings), local_actor(), "dataset.promote", f"{result.dataset} v{result.from_version}",
           detail=f"to v{result.version}: {result.applied} decision(s) applied")
    if args.json:
        print_json(vars(result))
        return EXIT_OK
    print(f"{result.dataset}: v{result.from_version} promoted to v{result.version} ({result.rows} records): "
          f"{result.applied} decision(s) applied, {result.rejected} rejected value(s) dropped, "
          f"{result.pending} item(s) still pending")
    print(f"  output     {result.path}")
    return EXIT_OK


def add_parsers(sub: SubParsers) -> None:
    p = sub.add_parser("review", help="the review queue: list items, accept, edit, reject or rerun one")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("list", help="review items, oldest first")
    q.add_argument("--dataset")
    q.add_argument("--state", choices=REVIEW_STATES)
    q.add_argument("--run", help="only items this run proposed")
    q.add_argument("--workflow")
    q.add_argument("--limit", type=positive_int, default=50)
    q.add_argument("--offset", type=non_negative_int, default=0)
    add_json_flag(q)
    for name, text in (("accept", "keep the proposed value (again: no change)"),
                       ("reject", "drop the proposed value (promote writes null, keeps the record)"),
                       ("rerun", "augment the record again now; the result is the new proposal, pending"),
                       ("edit", "keep VALUE instead of the proposal")):
        a = actions.add_parser(name, help=text)
        a.add_argument("id", type=positive_int, help="review item id")
        if name == "edit":
            a.add_argument("value", help='JSON (42, true, "42") or plain text')
        add_json_flag(a)
    p.set_defaults(handler=cmd_review)

    p = sub.add_parser("promote", help="write a new version of a dataset with the review decisions applied")
    p.add_argument("dataset")
    p.add_argument("--from-version", type=positive_int, default=None, help="default: the latest version")
    add_json_flag(p)
    p.set_defaults(handler=cmd_promote)
