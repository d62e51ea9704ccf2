"""What each Ray Data task of a run reserves."""

# A tenth of a CPU, not Ray's default of one whole CPU. Ray Data gives each running dataset a
# share of the cluster (two runs at once on 2 CPUs: one CPU each) and spreads that share over
# the plan's operators; a task asking more than its operator's part never starts, and the run
# waits forever. Measured on 2 CPUs next to the online API (a Serve replica holds 0.2): two runs
# hung with 1 CPU per task and with 0.25, and finished with 0.1. Our tasks are short and mostly
# wait on I/O, so sharing a CPU costs little.
TASK_CPUS = 0.1
TASK_OPTIONS = {"num_cpus": TASK_CPUS}
