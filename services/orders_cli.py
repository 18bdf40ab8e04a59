"""`nabij orders`: apply, list, show, history, end. Every change is a new version in Redis with
who, when and why (`nabij.order_store`); the running services follow it without a restart."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import redis

from nabij import order_store
from nabij.config import ORDERS_FILE, SETTINGS_FILE, load_orders, load_settings, resolve_directory
from nabij.evidence import keyfile
from nabij.evidence.chain import Signer
from nabij.evidence.store import SharedLog
from nabij.keys import Keys
from nabij.order_store import OrdersVersion, StaleVersionError
from nabij.orders import Order
from services.shell.cli_support import add_config_argument
from services.shell.redis_io import connect_as

EXIT_STALE = 1
"""Someone applied another version meanwhile: nothing was written, re-read and apply again."""
EXIT_NOT_FOUND = 2
EXIT_UNKNOWN = 3
"""Redis went away while applying and its outcome could not be read back."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    orders = commands.add_parser("orders", help="orders as versioned live data in Redis")
    actions = orders.add_subparsers(dest="orders_command", required=True, metavar="ACTION")

    cmd = actions.add_parser("apply", help="validate an orders file and apply it as one version")
    add_config_argument(cmd)
    cmd.add_argument("source", type=Path, help=f"an orders file, or a directory with {ORDERS_FILE}")
    _add_author(cmd)
    cmd.add_argument(
        "--dry-run", action="store_true", help="print what would change, apply nothing"
    )
    cmd.set_defaults(handler=_apply)

    cmd = actions.add_parser("end", help="end an order (a new version without it)")
    add_config_argument(cmd)
    cmd.add_argument("order_id")
    _add_author(cmd)
    cmd.set_defaults(handler=_end)

    cmd = actions.add_parser("list", help="the orders of the current version")
    add_config_argument(cmd)
    cmd.set_defaults(handler=_list)

    cmd = actions.add_parser("show", help="one order, as of the current or a given version")
    add_config_argument(cmd)
    cmd.add_argument("order_id")
    cmd.add_argument("--version", type=int, default=None)
    cmd.set_defaults(handler=_show)

    cmd = actions.add_parser("history", help="every version that changed an order: who, when, why")
    add_config_argument(cmd)
    cmd.add_argument("order_id")
    cmd.set_defaults(handler=_history)


def _add_author(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--by", required=True, help="who makes the change (name or badge number)")
    cmd.add_argument("--reason", required=True, help="why (court decision, device swap, ...)")


def _client(args: argparse.Namespace) -> tuple[redis.Redis, Keys]:
    directory = resolve_directory(args.config, os.environ)
    settings = load_settings(directory / SETTINGS_FILE).redis
    return connect_as(settings, "console"), Keys(settings.key_prefix)


def _evidence(args: argparse.Namespace, keys: Keys) -> SharedLog | None:
    """The order changes' evidence chain, signed with the configured key (none if unset)."""
    directory = resolve_directory(args.config, os.environ)
    audit = load_settings(directory / SETTINGS_FILE).audit
    if audit.key_file is None:
        return None
    signer = Signer.of(keyfile.make(audit.key_file)[0])  # as the services: made on first use
    return SharedLog(keys, order_store.EVIDENCE_WRITER, signer)


def _apply(args: argparse.Namespace) -> int:
    source = args.source / ORDERS_FILE if args.source.is_dir() else args.source
    orders = load_orders(source)  # ConfigError: every problem listed, nothing written
    return _change(args, orders, dry_run=args.dry_run)


def _end(args: argparse.Namespace) -> int:
    client, keys = _client(args)
    current = order_store.read_version(client, keys)
    if current is None or current.order(args.order_id) is None:
        print(f"no order {args.order_id} in the current version", file=sys.stderr)
        return EXIT_NOT_FOUND
    remaining = [o for o in current.orders if o.id != args.order_id]
    return _change(args, remaining, dry_run=False, client=(client, keys), current=current)


def _change(
    args: argparse.Namespace,
    orders: list[Order] | tuple[Order, ...],
    *,
    dry_run: bool,
    client: tuple[redis.Redis, Keys] | None = None,
    current: OrdersVersion | None = None,
) -> int:
    redis_client, keys = client or _client(args)
    current = current or order_store.read_version(redis_client, keys)
    old = current.orders if current is not None else []
    changed = order_store.changes(old, orders)
    for change in changed:
        print("\n".join(order_store.describe(change, old, orders)))
    if not changed:
        print("no change")
        return 0
    if dry_run:
        print("dry run: nothing applied")
        return 0
    version = order_store.next_version(
        orders,
        expected=current.version if current is not None else 0,
        by=args.by,
        reason=args.reason,
        now_ms=time.time_ns() // 1_000_000,
    )
    try:
        order_store.apply(redis_client, keys, version, _evidence(args, keys))
    except StaleVersionError as err:
        print(f"not applied: {err}", file=sys.stderr)
        return EXIT_STALE
    except redis.ConnectionError as err:
        return _outcome_after_lost_reply(redis_client, keys, version, err)
    print(f"applied as version {version.version}")
    return 0


def _outcome_after_lost_reply(
    client: redis.Redis, keys: Keys, version: OrdersVersion, err: Exception
) -> int:
    """The transaction either landed whole or not at all: read back which (the client retries
    its connection)."""
    try:
        if order_store.landed(client, keys, version):
            print(f"applied as version {version.version} (Redis answered late: {err})")
            return 0
    except redis.ConnectionError:
        print(
            f"unknown whether version {version.version} was applied: Redis is unreachable "
            f"({err}); run `nabij orders history` once it is back",
            file=sys.stderr,
        )
        return EXIT_UNKNOWN
    print(f"not applied: Redis was unreachable ({err}); nothing was written", file=sys.stderr)
    return EXIT_STALE


def _list(args: argparse.Namespace) -> int:
    current = order_store.read_version(*_client(args))
    if current is None:
        print("the store holds no orders yet (the services load orders.toml on first start)")
        return 0
    print(f"version {current.version} by {current.by} at {current.at}: {current.reason}")
    for order in current.orders:
        victims = ", ".join(order.victim_devices) or "-"
        print(
            f"{order.id}  offender {order.offender_device}  victims {victims}  "
            f"alarm {order.alarm_m:g} m  pre-alert {order.pre_alert_ring_m:g} m  "
            f"zones {len(order.zone)}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    version = order_store.read_version(*_client(args), args.version)
    order = version.order(args.order_id) if version is not None else None
    if version is None or order is None:
        print(f"no order {args.order_id} in that version", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(f"# version {version.version} by {version.by} at {version.at}: {version.reason}")
    print(order.model_dump_json(indent=2, exclude={"zone": {"__all__": {"geometry"}}}))
    return 0


def _history(args: argparse.Namespace) -> int:
    previous: Order | None = None
    found = False
    for version in order_store.history(*_client(args)):
        order = version.order(args.order_id)
        if order == previous:
            continue
        kind = "ended" if order is None else ("added" if previous is None else "changed")
        print(
            f"version {version.version}  {kind}  by {version.by}  at {version.at}  "
            f"why: {version.reason}"
        )
        previous, found = order, True
    if not found:
        print(f"no order {args.order_id} in any version", file=sys.stderr)
        return EXIT_NOT_FOUND
    return 0
