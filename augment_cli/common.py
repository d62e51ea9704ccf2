"""What every command shares: exit codes, the error a command prints without a traceback, option
types and shared options, and how a command joins (or starts) a Ray cluster.

The command modules import Ray and the engine inside the commands that use them, not at the top:
building the parser stays cheap, so `augment --help` and `augment validate` answer in about a
second instead of three.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable

from augment_core.logs import configure_logging, current_format
from augment_core.settings import Settings
from augment_core.store import MetadataStore
from cluster.local import LocalCluster, adopt_auth_mode, is_up
from pipelines.io.dataset_source import resolve_dataset_source
from pipelines.io.files import SourceError
from pipelines.spec.workflow import WorkflowSpec

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# A command: the parsed arguments and the settings in, the exit code out.
Handler = Callable[[argparse.Namespace, Settings], int]
# What `add_subparsers()` returns: each command module adds its nouns' parsers to it.
SubParsers = argparse._SubParsersAction


class CommandError(Exception):
    """A command that cannot do what was asked; printed without a traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


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


positive_int, non_negative_int = _int_at_least(1), _int_at_least(0)


def add_json_flag(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """`--json`: machine-readable output instead of the text a person reads."""
    parser.add_argument("--json", action="store_true", help=help)


def add_run_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", help="a run id or an unambiguous prefix of one")


def cluster_address(settings: Settings) -> str | None:
    """The configured cluster, else the one `augment cluster up` started, else None.
    Never Ray's own guess: after a crashed cluster it hangs on the address left in /tmp/ray."""
    address = settings.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        return address
    default = LocalCluster()
    if not is_up(default):
        return None
    adopt_auth_mode(default.dashboard_url)  # its token, when `augment cluster up` kept token auth on
    return default.gcs_address


def reap_when_no_cluster(settings: Settings, store: MetadataStore) -> None:
    """Fail runs whose heartbeat stopped, once, when no cluster is up: then no reaper runs
    anywhere (actors/reaper.py) and this command is the only process that can tell `augment
    status` and `augment runs` that a run's driver died. With a cluster up, its reaper does it."""
    if cluster_address(settings) is None:
        store.reap_stale_runs(settings.stale_after_seconds)


def connect_ray(address: str | None) -> None:
    """Join `address`, or start a private local instance for this command when it is None."""
    import ray

    if ray.is_initialized():  # already joined (a test, an embedding program)
        return
    if address is None:
        # Private to this command: no token to set up, as with `augment cluster up`.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # A private instance gets the object store of `augment cluster up`, not Ray's 30 % of memory:
    # a run's blocks beyond it spill to disk, so its memory stays flat with input size
    # (docs/benchmarks.md: peak memory at 1 M and 4 M rows, capped and with Ray's default).
    store_bytes = LocalCluster.object_store_bytes if address is None else None
    # JSON logs: each process's lines stay in its own log (a collector reads them there); echoed
    # here, Ray would prefix each with its process and no line on stderr would be JSON.
    json_logs = current_format() == "json"
    ray.init(address=address or "local", logging_level=logging.WARNING, log_to_driver=not json_logs,
             configure_logging=True, include_dashboard=False if address is None else None,
             object_store_memory=store_bytes)
    configure_logging(current_format())  # Ray's own loggers, which ray.init just gave handlers


def join_cluster_or_fail(settings: Settings, why: str) -> None:
    """Join the configured or local cluster; CommandError (with `why`) when none is up."""
    import ray

    if ray.is_initialized():
        return
    address = cluster_address(settings)
    if address is None:
        raise CommandError(why)
    connect_ray(address)


def resolve_source(spec: WorkflowSpec, store: MetadataStore) -> None:
    """Pin a dataset source to its catalogued version now, so that a missing one is refused here."""
    try:
        resolve_dataset_source(spec, store)
    except SourceError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
