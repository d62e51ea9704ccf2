"""`augment users|keys|audit`: the gateway's users and API keys, and the audit log.

These commands talk to the metadata store directly, as the operator of this machine (who can read
the store anyway): no key is needed, and each change is audited as the local user.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import sys

from augment_cli.common import EXIT_OK, EXIT_USAGE, CommandError, SubParsers, add_json_flag, positive_int
from augment_cli.output import print_audit, print_json, print_keys, print_users
from augment_core.audit import list_entries, local_actor, record
from augment_core.identity import MAX_DAILY_SPEND_USD, Identity, IdentityError, Role
from augment_core.settings import Settings
from augment_core.store import open_store, utcnow

ADMIN_PASSWORD_ENV = "AUGMENT_ADMIN_PASSWORD"


def read_password(args: argparse.Namespace, env: str | None = None) -> str:
    """The password from stdin (--password-stdin), the environment variable `env`, or a prompt."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if env and os.environ.get(env):
        return os.environ[env]
    if not sys.stdin.isatty():
        raise CommandError("no password: pass --password-stdin and write it to stdin"
                           + (f", or set {env}" if env else ""), EXIT_USAGE)
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise CommandError("the two passwords differ", EXIT_USAGE)
    return first


def cmd_users(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    identity = Identity(store)
    try:
        if args.action == "list":
            users = identity.list_users()
            print_json([u.model_dump(mode="json") for u in users]) if args.json else print_users(users)
            return EXIT_OK
        if args.action == "create-admin":
            if identity.has_users() and not args.force:
                raise CommandError("users exist already: add an admin with `augment users create NAME --role admin`")
            user = identity.create_user(args.name, Role.admin, read_password(args, ADMIN_PASSWORD_ENV))
            action = "user.create"
        elif args.action == "create":
            password = None if args.no_password else read_password(args)
            user = identity.create_user(args.name, Role(args.role), password)
            action = "user.create"
        elif args.action == "set-role":
            user = identity.set_role(args.name, Role(args.role))
            action = "user.set_role"
        elif args.action == "set-password":
            user = identity.set_password(args.name, read_password(args))
            action = "user.set_password"
        else:
            user = identity.set_disabled(args.name, args.action == "disable")
            action = f"user.{args.action}"
    except IdentityError as exc:
        record(store, local_actor(), f"user.{args.action}", args.name, "refused", str(exc))
        raise CommandError(str(exc), EXIT_USAGE) from None
    record(store, local_actor(), action, user.name, detail=f"role {user.role.value}")
    state = "disabled" if user.disabled else "enabled"
    print(f"user {user.name}: {user.role.value}, {state}")
    return EXIT_OK


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    identity = Identity(store)
    try:
        if args.action == "list":
            keys = identity.list_keys(args.user)
            if args.json:
                print_json([k.model_dump(mode="json") | {"state": k.state} for k in keys])
            else:
                print_keys(keys)
            return EXIT_OK
        if args.action == "create":
            expires = utcnow() + dt.timedelta(days=args.days) if args.days else None
            key, secret = identity.create_key(args.user, args.name, expires, args.rate, args.daily_spend_usd)
            limits = (f", {key.rate_per_minute}/min" if key.rate_per_minute is not None else "") + (
                f", {key.daily_spend_usd:g} USD/day" if key.daily_spend_usd is not None else "")
            record(store, local_actor(), "key.create", key.prefix, detail=f"for {key.user}: {key.name}{limits}")
            print(f"API key {key.prefix} for {key.user} ({key.name})"
                  + (f", expires {key.expires_at:%Y-%m-%d %H:%M} UTC" if key.expires_at else "")
                  + ". It is shown this once; send it as 'Authorization: Bearer <key>':", file=sys.stderr)
            print(secret)
            return EXIT_OK
        key = identity.revoke_key(args.prefix)
        record(store, local_actor(), "key.revoke", key.prefix, detail=f"of {key.user}")
        print(f"API key {key.prefix} of {key.user} revoked: every replica refuses it within "
              f"{settings.auth_cache_seconds:g}s")
        return EXIT_OK
    except IdentityError as exc:
        if args.action != "list":  # refused changes are audited too
            target = args.prefix if args.action == "revoke" else f"for {args.user}"
            record(store, local_actor(), f"key.{args.action}", target, "refused", str(exc))
        raise CommandError(str(exc), EXIT_USAGE) from None


def spend_usd(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of USD") from None
    if not 0 <= value <= MAX_DAILY_SPEND_USD:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"a daily spend must be 0-{MAX_DAILY_SPEND_USD:g} USD")
    return value


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    entries = list_entries(open_store(settings), limit=args.limit, actor=args.actor, action=args.action)
    print_json([e.model_dump(mode="json") for e in entries]) if args.json else print_audit(entries)
    return EXIT_OK


def bootstrap_hint(settings: Settings) -> str | None:
    """What `augment serve` says when nobody could sign in: how to make the first admin. With
    AUGMENT_ADMIN_PASSWORD set, it makes the admin 'admin' itself (the variable is read this once)."""
    store = open_store(settings)
    identity = Identity(store)
    if identity.has_users():
        return None
    password = os.environ.get(ADMIN_PASSWORD_ENV)
    if password:
        try:
            identity.create_user("admin", Role.admin, password)
        except IdentityError as exc:
            return f"{ADMIN_PASSWORD_ENV} was not used: {exc}"
        record(store, local_actor(), "user.create", "admin", detail=f"role admin, from {ADMIN_PASSWORD_ENV}")
        return f"created the first admin, 'admin', with the password of {ADMIN_PASSWORD_ENV}; unset it now"
    return ("no user can sign in yet: create the first admin with\n"
            "    augment users create-admin NAME        (asks for a password; or --password-stdin)\n"
            f"  or set {ADMIN_PASSWORD_ENV} before `augment serve` to create the admin 'admin'")


def add_parsers(sub: SubParsers) -> None:
    roles = [r.value for r in Role]
    p = sub.add_parser("users", help="users of the API and panels, each with one role (viewer, operator, admin)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_json_flag(actions.add_parser("list", help="every user, role and state"))
    for name, help_text in (("create-admin", "the first admin (refused once users exist, unless --force)"),
                            ("create", "a user with a role"), ("set-password", "a new password; ends their sessions")):
        a = actions.add_parser(name, help=help_text)
        a.add_argument("name")
        a.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
        if name == "create":
            a.add_argument("--role", choices=roles, default=Role.viewer.value)
            a.add_argument("--no-password", action="store_true", help="a user who signs in with API keys only")
        if name == "create-admin":
            a.add_argument("--force", action="store_true", help="even when other users exist")
    a = actions.add_parser("set-role", help="change a user's role")
    a.add_argument("name")
    a.add_argument("role", choices=roles)
    for name in ("disable", "enable"):
        actions.add_parser(name, help=f"{name} a user (disabling ends their sessions and stops their keys)") \
            .add_argument("name")
    p.set_defaults(handler=cmd_users)

    p = sub.add_parser("keys", help="API keys: created for a user, shown once, stored only as a hash")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("create", help="a new key for USER, printed once on stdout")
    a.add_argument("user")
    a.add_argument("name", help="what the key is for, e.g. 'crm sync'")
    a.add_argument("--days", type=positive_int, default=None, help="expire after this many days (default: never)")
    a.add_argument("--rate", type=positive_int, default=None, help="requests/minute for this key (default: the "
                                                                    "gateway's AUGMENT_API_RATE_PER_MINUTE)")
    a.add_argument("--daily-spend-usd", type=spend_usd, default=None, metavar="USD",
                   help="provider spend per UTC day of this key's online calls and review reruns (default: the"
                        " gateway's AUGMENT_API_DAILY_SPEND_USD); 0: no paid provider calls")
    a = actions.add_parser("list", help="keys with prefix, user, state and last use (never the secret)")
    a.add_argument("--user", default=None)
    add_json_flag(a)
    actions.add_parser("revoke", help="stop a key everywhere").add_argument("prefix", help="the key's prefix, aug_...")
    p.set_defaults(handler=cmd_keys)

    p = sub.add_parser("audit", help="the audit log: who changed what, when, and how it ended (newest first)")
    p.add_argument("--limit", type=positive_int, default=50)
    p.add_argument("--actor", default=None, help="entries whose actor starts with this")
    p.add_argument("--action", default=None, help="one action, e.g. run.cancel, review.accept, key.revoke")
    add_json_flag(p)
    p.set_defaults(handler=cmd_audit)
