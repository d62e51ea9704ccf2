"""`augment serve [--stop]`: the API and panels of configs/serve.yaml deployed on Ray Serve."""

from __future__ import annotations

import argparse
import sys

from augment_cli.common import EXIT_OK, EXIT_USAGE, CommandError, SubParsers
from augment_cli.users import bootstrap_hint
from augment_core.settings import Settings


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from cluster.local import adopt_auth_mode
    from serve_apps import deploy

    address = args.address
    adopt_auth_mode(address)  # send the cluster's token when it asks for one
    try:
        if args.stop:
            deploy.stop(address)
            print("Serve applications removed")
            return EXIT_OK
        config = deploy.load_config(args.config, prefix=args.prefix, port=args.port)
        if settings.serve_ingress == "proxy" and (single := deploy.single_replica_panels(config)):
            print(f"augment serve: AUGMENT_SERVE_INGRESS=proxy cannot keep a browser on one panel replica; "
                  f"{', '.join(single)} run(s) one replica each (HAProxy, the default, runs them as configured)",
                  file=sys.stderr)
        urls = deploy.deploy(address, config)
    except deploy.ServeConfigError as exc:
        raise CommandError(f"serve config rejected: {exc}", EXIT_USAGE) from None
    except deploy.DeployError as exc:
        raise CommandError(str(exc)) from None
    print("Serve applications running:")
    for name, url in urls.items():
        print(f"  {name:<12} {url}")
    hint = bootstrap_hint(settings)
    if hint:
        print(f"augment serve: {hint}", file=sys.stderr)
    return EXIT_OK


def add_parsers(sub: SubParsers) -> None:
    p = sub.add_parser("serve", help="deploy the API and panels on Ray Serve (configs/serve.yaml)")
    p.add_argument("--config", default="configs/serve.yaml")
    p.add_argument("--prefix", default=None, help="route prefix for every app, e.g. /augment")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default from the config)")
    p.add_argument("--address", default="http://127.0.0.1:8265", help="dashboard address of the cluster")
    p.add_argument("--stop", action="store_true", help="remove the applications instead")
    p.set_defaults(handler=cmd_serve)
