"""What each Ray Data task and actor of a run reserves, and where it runs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

# A tenth of a CPU, not Ray's default of one whole CPU. Ray Data gives each running dataset a
# share of the cluster (two runs at once on 2 CPUs: one CPU each) and spreads that share over
# the plan's operators; a task asking more than its operator's part never starts, and the run
# waits forever. Measured on 2 CPUs next to the online API (a Serve replica holds 0.2): two runs
# hung with 1 CPU per task and with 0.25, and finished with 0.1. Our tasks are short and mostly
# wait on I/O, so sharing a CPU costs little.
TASK_CPUS = 0.1
TASK_OPTIONS = {"num_cpus": TASK_CPUS}
# A file is read by one task (its rows are numbered in order), but its blocks are validated by
# tasks of their own, in parallel, while the read goes on: Ray Data fuses consecutive operators
# only when they ask for the same resources, and validation fused into the read ran a whole file
# on one core (34 of a 4 M-row run's 308 seconds).
READ_CPUS = 0.09


# Ray Data gathers what a read task yields into blocks of up to its target_max_block_size (128 MiB
# by default), and every later step of a run is a task per block. The sample's 1 M-row CSV file
# (249 MB) came in three blocks of 380 k, 380 k and 240 k rows: three tasks a step on two cores,
# one core idle through the last; its 200 k-row file was one block, one core for every step. A
# run's blocks are sized from its input to make one a CPU: a 1 M-row run took 19.6-21.2 s instead
# of 25.6-25.8, a 200 k-row run 7.1-7.2 s instead of 7.7-8.8 (docs/benchmarks.md, part 6). Two a
# CPU did worse (21.7-22.5 and 7.8-8.5 s), and blocks of 4-8 MiB far worse (43-54 s): each task in
# flight at once is a worker process of its own, each new one importing the engine.
BLOCKS_PER_CPU = 1
# A CSV file's bytes as Arrow text columns with the row bookkeeping added (_source and
# _source_order hold the path): 1.42 for the sample. Parquet files are compressed: their blocks
# come out smaller than one a CPU, several a CPU.
ARROW_BYTES_PER_FILE_BYTE = 1.45
MIN_BLOCK_BYTES = 8 << 20  # a small input is one block
# One block a CPU up to this size; a larger input in blocks of Ray Data's default size, several a
# CPU. Blocks of 256 MiB took a 4 M-row run's peak memory from about 4.2 to 6.2 GB (14 workers
# holding their blocks and outputs), where an idle core at the end costs a smaller share.
MAX_BLOCK_BYTES = 192 << 20
LARGE_INPUT_BLOCK_BYTES = 128 << 20
# The share of the object store a run's Ray Data plan may fill before it holds tasks back. Ray
# Data's default, half, is less than blocks of one a CPU need in flight: at 1 M rows (two blocks
# of 180 MB on 2 CPUs) the read's second block waited 1.4 s for the first block's validated output
# to leave the budget, one core idle (docs/benchmarks.md, part 7). Beyond the store, objects
# spill to disk; what is left is for Serve and the actors' own objects.
OBJECT_STORE_SHARE = 0.9


def block_bytes(input_bytes: int, cpus: int) -> int:
    """The target size of a run's blocks (Ray Data's target_max_block_size), for input files of
    `input_bytes` on a cluster of `cpus`."""
    share = input_bytes * ARROW_BYTES_PER_FILE_BYTE / (BLOCKS_PER_CPU * max(1, cpus))
    return LARGE_INPUT_BLOCK_BYTES if share > MAX_BLOCK_BYTES else int(max(MIN_BLOCK_BYTES, share))


def cluster_cpus() -> int:
    """The CPUs of the cluster the plan runs on, when it is planned (at least 1)."""
    import ray  # here: the rest of this module is constants that workers read without Ray's cost

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def task_args(at_most: int | None = None) -> dict[str, Any]:
    """map_batches / read arguments of a run's tasks: TASK_CPUS each, at most one task per CPU of
    the cluster at once.

    Left to itself Ray Data runs up to ten TASK_CPUS tasks a CPU of each operator at once, and
    every task running at once is a worker process of its own: each new one imports Ray Data,
    pandas and the engine (about 1.5 s of CPU). On 2 CPUs a 200,000-row run started ten such
    processes, 13 of its 30 CPU seconds (bench/batch_vs_inprocess.py). Our tasks are CPU-bound:
    more of them at once than cores gains nothing. `at_most`: fewer still."""
    cpus = cluster_cpus()
    return {"num_cpus": TASK_CPUS, "concurrency": min(cpus, at_most or cpus)}


def write_args(at_most: int | None = None) -> dict[str, Any]:
    """write_parquet arguments of a run's writes: as task_args."""
    return {"ray_remote_args": TASK_OPTIONS, "concurrency": task_args(at_most)["concurrency"]}


def in_blocks_of(dataset: ray.data.Dataset, rows: int) -> ray.data.Dataset:
    """`dataset` in blocks of `rows` rows, cut by tasks that ask TASK_CPUS like every other task of a run.

    `Dataset.repartition` takes no resources (Ray 2.60) and its tasks ask a whole CPU: on a
    cluster whose nodes each had less than one CPU free (nodes of one CPU each, with the augment
    actors on them) the run waited for ever. So its operator is given our share here, through a
    private attribute (tests/integration/test_two_nodes.py runs on one-CPU nodes)."""
    blocks = dataset.repartition(target_num_rows_per_block=rows)
    operator = blocks._logical_plan.dag
    assert type(operator).__name__ == "StreamingRepartition", f"Ray Data planned {operator!r}"
    operator.ray_remote_args.update(TASK_OPTIONS)  # type: ignore[attr-defined]  # a StreamingRepartition
    return blocks


# How long a run waits for the cluster to place its actor pool's bundles before it lets Ray place
# the actors as it would without them.
PLACEMENT_WAIT_S = 30.0


@contextmanager
def spread_over_nodes(actors: int) -> Iterator[dict[str, Any]]:
    """map_batches arguments that put an actor pool of `actors` actors (TASK_CPUS each) on as many
    of the cluster's nodes as there are actors, for the time of the `with` block.

    Ray Data asks Ray to SPREAD the actors, but Ray's spread is one round robin of the raylet
    over every task and actor it places: between the pool's actors, the run's read and map tasks
    move it on, and a 2-node cluster now and then put both actors of a pool on one node (one of
    tests/integration/test_two_nodes.py's full-suite runs). A placement group of one bundle an
    actor, SPREAD, places them on distinct nodes wherever the nodes have room (soft: more actors
    than nodes, or a full node, still place). On a one-node cluster, or for no actors, nothing is
    asked."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    nodes = sum(1 for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0)
    if actors < 1 or nodes < 2:
        yield {}
        return
    group = placement_group([{"CPU": TASK_CPUS}] * actors, strategy="SPREAD")
    try:
        ready, _ = ray.wait([group.ready()], timeout=PLACEMENT_WAIT_S)
        if not ready:
            log.warning("the cluster did not place %d augment actors' bundles in %.0f s: Ray places them",
                        actors, PLACEMENT_WAIT_S)
            yield {}
            return
        # Not captured by what the actors start (nothing): only the pool lives in the group.
        strategy = PlacementGroupSchedulingStrategy(group, placement_group_capture_child_tasks=False)
        yield {"scheduling_strategy": strategy}
    finally:
        remove_placement_group(group)
