"""What each Ray Data task of a run reserves."""

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
