"""`augment review list|accept|edit|reject|rerun` and `augment promote` (registered by main.py)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from augment_cli.main import EXIT_OK, CommandError, _non_negative_int, _positive_int
from augment_core.reviews import REVIEW_STATES, ReviewConflict, ReviewItem, list_items
from augment_core.settings import Settings
from augment_core.store import open_store


def cmd_review(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "list":
        return _list(args, settings)
    from pipelines import review_actions

    try:
        if args.action == "accept":
            item = review_actions.accept(settings, args.id)
        elif args.action == "reject":
            item = review_actions.reject(settings, args.id)
        elif args.action == "edit":
            item = review_actions.edit(settings, args.id, _value(args.value))
        else:
            item = review_actions.rerun(settings, _catalog(settings), args.id)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    except (ReviewConflict, review_actions.RerunFailed) as exc:
        raise CommandError(str(exc)) from None
    except review_actions.InvalidValue as exc:
        raise CommandError(f"value rejected: {exc}") from None
    _print_item(item, args.json)
    return EXIT_OK


def _value(text: str) -> Any:
    """VALUE as JSON (42, true, "42"), or as the text itself when it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _catalog(settings: Settings) -> Any:
    from pipelines.catalog import WorkflowCatalog
    from pipelines.inference.context import RunContext

    return WorkflowCatalog(settings.workflows_dir, context_for=lambda spec: RunContext(
        providers=spec.providers, settings=settings, workflow=spec.name))


def _list(args: argparse.Namespace, settings: Settings) -> int:
    items, total = list_items(open_store(settings), dataset=args.dataset, state=args.state, run_id=args.run,
                              workflow=args.workflow, limit=args.limit, offset=args.offset)
    if args.json:
        print(json.dumps({"items": [i.model_dump(mode="json") for i in items], "total": total}, indent=2,
                         ensure_ascii=False))
        return EXIT_OK
    if not items:
        print("no review items" + (f" (of {total})" if total else ""))
        return EXIT_OK
    print(f"{'ID':>7}  {'STATE':<9} {'DATASET':<20} {'V':>3}  {'RECORD':<36} {'FIELD':<18} PROPOSED")
    for i in items:
        shown = i.decided_value if i.state == "edited" else i.after
        print(f"{i.id:>7}  {i.state:<9} {i.dataset[:20]:<20} {i.version:>3}  {i.record_uuid[:36]:<36} "
              f"{i.field[:18]:<18} {json.dumps(shown, ensure_ascii=False)[:60]}")
    if args.offset + len(items) < total:
        print(f"  ({len(items)} of {total} shown: --offset {args.offset + len(items)} for more)")
    return EXIT_OK


def _print_item(item: ReviewItem, as_json: bool) -> None:
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


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.promote import promote

    try:
        result = promote(settings, args.dataset, args.from_version)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    if args.json:
        print(json.dumps(vars(result), indent=2))
        return EXIT_OK
    print(f"{result.dataset}: v{result.from_version} promoted to v{result.version} ({result.rows} records): "
          f"{result.applied} decision(s) applied, {result.rejected} rejected value(s) dropped, "
          f"{result.pending} item(s) still pending")
    print(f"  output     {result.path}")
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("review", help="the review queue: list items, accept, edit, reject or rerun one")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("list", help="review items, oldest first")
    q.add_argument("--dataset")
    q.add_argument("--state", choices=REVIEW_STATES)
    q.add_argument("--run", help="only items this run proposed")
    q.add_argument("--workflow")
    q.add_argument("--limit", type=_positive_int, default=50)
    q.add_argument("--offset", type=_non_negative_int, default=0)
    q.add_argument("--json", action="store_true")
    for name, text in (("accept", "keep the proposed value (again: no change)"),
                       ("reject", "drop the proposed value (promote writes null, keeps the record)"),
                       ("rerun", "augment the record again now; the result is the new proposal, pending"),
                       ("edit", "keep VALUE instead of the proposal")):
        a = actions.add_parser(name, help=text)
        a.add_argument("id", type=_positive_int, help="review item id")
        if name == "edit":
            a.add_argument("value", help='JSON (42, true, "42") or plain text')
        a.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_review)

    p = sub.add_parser("promote", help="write a new version of a dataset with the review decisions applied")
    p.add_argument("dataset")
    p.add_argument("--from-version", type=_positive_int, default=None, help="default: the latest version")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_promote)
