"""`augment cluster up|down|status`: a local Ray head node with the dashboard and Jobs API."""

from __future__ import annotations

import argparse

from augment_cli.common import EXIT_FAILED, EXIT_OK, SubParsers
from augment_core.settings import Settings
from cluster import local


def cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    cluster = local.LocalCluster(dashboard_port=args.dashboard_port, gcs_port=args.port, num_cpus=args.num_cpus,
                                 metrics_port=args.metrics_port, token_auth=not args.no_token_auth)
    if args.action == "up":
        if local.is_up(cluster):
            mode = local.dashboard_auth_mode(cluster.dashboard_url)
            print(f"a cluster is already up: dashboard and Jobs API at {cluster.dashboard_url} (token auth {mode})")
            return EXIT_OK
        local.up(settings, cluster)
        print(f"cluster up: dashboard and Jobs API at {cluster.dashboard_url}, GCS at {cluster.gcs_address}")
        if cluster.token_auth:
            print(f"  Ray token authentication is on; the token is in {local.token_path()} (owner-only).")
            print("  `augment` commands send it themselves; for `ray job`, `serve` and the dashboard's API:")
            print("    export RAY_AUTH_MODE=token")
        else:
            print("  Ray token authentication is OFF: anyone who can reach these ports can run code here.")
        print(f"  metrics (Prometheus format): {cluster.metrics_url}; every node's exporter is listed in"
              f" {local.SERVICE_DISCOVERY_FILE}, which cluster/prometheus/prometheus.yml reads")
        print(f"  submit: ray job submit --address {cluster.dashboard_url} --working-dir . -- "
              "augment run configs/workflows/organisations.yaml")
    elif args.action == "down":
        local.down()
        print("cluster down")
    else:
        up = local.is_up(cluster)
        print(f"cluster {'up' if up else 'down'} ({cluster.dashboard_url})")
        return EXIT_OK if up else EXIT_FAILED
    return EXIT_OK


def add_parsers(sub: SubParsers) -> None:
    p = sub.add_parser("cluster", help="start or stop a local Ray head node (dashboard and Jobs API)")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--dashboard-port", type=int, default=8265)
    p.add_argument("--port", type=int, default=6380, help="GCS port (default 6380; 6379 is Redis's)")
    p.add_argument("--num-cpus", type=int, default=None)
    p.add_argument("--metrics-port", type=int, default=8080,
                   help="where Ray's metrics agent exports augment's and Ray's metrics (default 8080, as on KubeRay)")
    p.add_argument("--no-token-auth", action="store_true",
                   help="turn Ray's token authentication off (a single-user machine only): jobs, dashboard and "
                        "GCS then take any local caller")
    p.set_defaults(handler=cmd_cluster)
