"""`augment datasets|import|diff`: catalogued versions listed, files imported as one, two compared."""

from __future__ import annotations

import argparse
import os

from augment_cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    SubParsers,
    add_json_flag,
    cluster_address,
    connect_ray,
    positive_int,
)
from augment_cli.output import print_diff, print_import, print_json, print_versions
from augment_core.errors import describe_error
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import PathCatalogued, open_store
from pipelines.io.files import SourceError
from pipelines.operations.diff import as_json, diff_versions
from pipelines.operations.import_schema import ImportRefused, detect_kind, key_schema
from pipelines.spec.workflow import FileSource, SchemaSpec
from pipelines.workflows.loader import load_spec


def cmd_datasets(args: argparse.Namespace, settings: Settings) -> int:
    versions = open_store(settings).list_dataset_versions(args.dataset)
    if args.json:
        print_json([v.model_dump(mode="json", by_alias=True) for v in versions])
        return EXIT_OK
    if not versions:
        print(f"no versions of {args.dataset}" if args.dataset else "no datasets yet")
        return EXIT_OK if not args.dataset else EXIT_FAILED
    print_versions(versions)
    return EXIT_OK


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.engine.batch import quiet_ray_data
    from pipelines.operations.importer import import_dataset

    source, schema = _import_input(args, settings)
    connect_ray(cluster_address(settings))
    quiet_ray_data()
    try:
        result = import_dataset(settings, source, args.dataset, schema)
    except ImportRefused as exc:
        raise CommandError(f"import refused: {exc}", EXIT_USAGE) from None
    except (SourceError, PathCatalogued) as exc:
        raise CommandError(f"import failed: {exc}") from None
    except Exception as exc:  # Ray wraps a reader's error: name ours, as a run does
        raise CommandError(f"import failed: {describe_error(exc)}") from None
    if args.json:
        print_json(result.as_json())
    else:
        print_import(result)
    return EXIT_OK


def _import_input(args: argparse.Namespace, settings: Settings) -> tuple[FileSource, SchemaSpec]:
    """The files and the schema an import validates them with; a usage error (exit 2) before any
    Ray work when either is wrong."""
    try:
        if len(args.delimiter) != 1:
            raise ImportRefused(f"--delimiter: expected one character, got {args.delimiter!r}")
        path = args.path if "://" in args.path else os.path.abspath(args.path)
        kind = detect_kind(path, args.format)
        source = FileSource(kind=kind, path=path, delimiter=args.delimiter)
        if args.schema_from:
            return source, load_spec(args.schema_from).schema_
        key = [k.strip() for k in args.key.split(",") if k.strip()]
        if not key:
            raise ImportRefused("--key: name at least one column")
        return source, key_schema(source, key, *StoragePaths(settings).filesystem(source.path))
    except ImportRefused as exc:
        raise CommandError(f"import refused: {exc}", EXIT_USAGE) from None


def cmd_diff(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    try:
        before = store.get_dataset_version(args.dataset, args.v1)
        after = store.get_dataset_version(args.dataset, args.v2)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    result = diff_versions(StoragePaths(settings), args.dataset, (before.version, before.path),
                           (after.version, after.path), limit=args.limit, with_provenance=args.with_provenance)
    if args.json:
        print_json(as_json(result))
    else:
        print_diff(result, before, after, args.limit)
    return EXIT_OK


def add_parsers(sub: SubParsers) -> None:
    p = sub.add_parser("datasets", help="catalogued datasets and their versions")
    p.add_argument("dataset", nargs="?", help="only this dataset")
    add_json_flag(p)
    p.set_defaults(handler=cmd_datasets)

    p = sub.add_parser("import", help="validate files and catalogue them as a new, read-only version of a dataset")
    p.add_argument("path", help="a CSV, JSON Lines or Parquet file, a folder of them, or an s3:// URL")
    p.add_argument("--dataset", required=True, help="the dataset that gets the new version")
    schema = p.add_mutually_exclusive_group(required=True)
    schema.add_argument("--schema-from", metavar="WORKFLOW.yaml", help="validate against this workflow's schema")
    schema.add_argument("--key", metavar="COL[,COL]",
                        help="every column of the file as it is (text for CSV; JSON Lines typed by its values),"
                             " keyed by these")
    p.add_argument("--format", choices=["csv", "jsonl", "parquet"], help="default: from the file name")
    p.add_argument("--delimiter", default=",", help="CSV only (default ,)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser("diff", help="records added, removed and changed between two versions of a dataset")
    p.add_argument("dataset")
    p.add_argument("v1", type=positive_int, help="the earlier version")
    p.add_argument("v2", type=positive_int, help="the later version")
    p.add_argument("--limit", type=positive_int, default=20, help="records of each kind to show (default 20)")
    p.add_argument("--with-provenance", action="store_true", help="compare the *_provenance columns too")
    add_json_flag(p)
    p.set_defaults(handler=cmd_diff)
