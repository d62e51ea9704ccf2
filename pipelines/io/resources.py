"""What each Ray Data task of a run reserves."""

from typing import Any

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
