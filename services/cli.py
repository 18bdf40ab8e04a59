"""`nabij`: the one console script. It only parses arguments and wires parts together."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Literal

import redis

import services.audit_cli
import services.console.cli
import services.devices
import services.orders_cli
import services.replay.cli
import simulators.cli
from nabij.clock import scaled_clock
from nabij.config import Config, ConfigError, load_config, resolve_directory, with_shard
from nabij.contract import AckRequest, ResolveRequest
from nabij.keys import Keys, Shard
from nabij.schemas import export_schemas
from nabij.settings import REDIS_ROLES, RedisRole
from services.shell.cli_support import add_config_argument, load_from_args, stop_on_signals
from services.shell.logs import configure_logging
from services.shell.redis_io import connect_as, read_password

OperatorRole = Literal["probation", "police"]

# Packages that bring their own subcommands.
SUBCOMMAND_PACKAGES = (
    simulators.cli.register,
    services.replay.cli.register,
    services.devices.register,
    services.console.cli.register,
    services.orders_cli.register,
    services.audit_cli.register,
)
EXIT_CONFIG = 2
# `ack` and `resolve`: applied (0), not applied (1: the gateway said why), refused before sending
# (2, as a usage error), no answer from the gateway in time (3: the request waits in the stream).
EXIT_NOT_APPLIED = 1
EXIT_INVALID = 2
EXIT_NO_ANSWER = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
        return result
    except ConfigError as err:
        print(f"invalid configuration ({len(err.problems)} problems):", file=sys.stderr)
        for problem in err.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nabij", description="Proximity alerting for victims of stalking."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, help_text in (
        ("proximity", "run the proximity service (fix ingest, distance, hysteresis)"),
        ("gateway", "run the alarm gateway (routing, escalation, dispatch queues)"),
        ("run", "run both services in one process"),
    ):
        cmd = commands.add_parser(name, help=help_text)
        add_config_argument(cmd)
        cmd.add_argument(
            "--metrics-port", type=int, default=None, help="serve /metrics, /healthz, /readyz"
        )
        if name != "gateway":
            cmd.add_argument(
                "--shard",
                metavar="K/N",
                type=_shard,
                default=None,
                help="judge shard K of N of the orders (default: proximity.shard, 1/1)",
            )
        cmd.set_defaults(handler=_serve, services=name, shard=None)

    cmd = commands.add_parser("check-config", help="validate a config directory and exit")
    cmd.add_argument("directory", nargs="?", default=None)
    cmd.set_defaults(handler=_check_config)

    for name, help_text in (("ack", "acknowledge an alarm"), ("resolve", "resolve an alarm")):
        cmd = commands.add_parser(name, help=help_text)
        add_config_argument(cmd)
        cmd.add_argument("alarm_id")
        cmd.add_argument("--by", required=True, help="who acts (name or badge number)")
        cmd.add_argument("--note", default=None)
        cmd.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the gateway")
        _add_role_argument(cmd)
        cmd.set_defaults(handler=_operate, action=name)

    cmd = commands.add_parser("alarms", help="list open alarms")
    add_config_argument(cmd)
    _add_role_argument(cmd)
    cmd.set_defaults(handler=_alarms)

    cmd = commands.add_parser("tail", help="follow a dispatch queue")
    add_config_argument(cmd)
    cmd.add_argument("queue", choices=["probation", "police"])
    cmd.add_argument("--from-start", action="store_true", help="show the queue from its start")
    cmd.add_argument("--group", default=None, help="read as this consumer group (each notice once)")
    cmd.add_argument("--consumer", default="terminal")
    cmd.add_argument("--no-colour", action="store_true")
    _add_role_argument(cmd, default=None)
    cmd.set_defaults(handler=_tail)

    cmd = commands.add_parser("demo", help="embedded broker and store, both services, scenarios")
    cmd.add_argument("--speed", type=float, default=20.0)
    cmd.add_argument(
        "--console-stays", action="store_true", help="keep the console up after the scenarios"
    )
    cmd.set_defaults(handler=_demo)

    for register in SUBCOMMAND_PACKAGES:
        register(commands)

    cmd = commands.add_parser(
        "healthcheck", help="exit 0 when a service's /healthz answers 200 (container probes)"
    )
    cmd.add_argument("--port", type=int, required=True, help="its --metrics-port (console: port)")
    cmd.add_argument("--host", default="127.0.0.1")
    cmd.add_argument("--timeout", type=float, default=2.0, help="seconds")
    cmd.set_defaults(handler=_healthcheck)

    cmd = commands.add_parser("redis-acl", help="print the Redis ACL file of nabij's users")
    add_config_argument(cmd)
    cmd.set_defaults(handler=_redis_acl)

    cmd = commands.add_parser("export-schemas", help="write JSON Schemas of the wire contract")
    cmd.add_argument("directory", type=Path, default=Path("docs/schemas"), nargs="?")
    cmd.set_defaults(handler=_export_schemas)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from services.runner import run_services
    from services.shell.health import HealthServer

    config = load_from_args(args)
    if args.shard is not None:
        config = with_shard(config, args.shard)
    configure_logging(config.settings.log.level, args.services)
    health = (
        HealthServer(args.metrics_port, host=config.settings.health.bind)
        if args.metrics_port is not None
        else None
    )
    wanted = ("proximity", "gateway") if args.services == "run" else (args.services,)
    try:
        return run_services(config, wanted, stop_on_signals(), health)
    finally:
        if health is not None:
            health.stop()


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _check_config(args: argparse.Namespace) -> int:
    directory = resolve_directory(args.directory, os.environ)
    config = load_config(directory)
    pairs = sum(len(order.victim_devices) for order in config.orders)
    print(f"{directory}: valid ({len(config.orders)} orders, {pairs} pairs)")
    return 0


def _add_role_argument(cmd: argparse.ArgumentParser, default: str | None = "probation") -> None:
    cmd.add_argument(
        "--role",
        choices=["probation", "police"],
        default=default,
        help="whose Redis user to connect as (`redis.users`; default: "
        + (default or "the queue's")
        + ")",
    )


def _operator_client(config: Config, role: OperatorRole) -> tuple[redis.Redis, Keys]:
    return connect_as(config.settings.redis, role), Keys(config.settings.redis.key_prefix)


def _operate(args: argparse.Namespace) -> int:
    from services.alarm_gateway import operators

    config = load_from_args(args)
    client, keys = _operator_client(config, args.role)
    # nabij's clock: a simulation may run it on a scenario's clock.
    now_ms = scaled_clock(config.settings.clock.timescale())()
    kind = AckRequest if args.action == "ack" else ResolveRequest
    by = args.by.strip()
    try:
        sent = operators.request(
            client, keys, kind, args.alarm_id, by=by, note=args.note, now_ms=now_ms
        )
    except operators.OperatorError as err:
        print(f"nabij {args.action}: refused, nothing sent: {err}", file=sys.stderr)
        return EXIT_INVALID
    outcome = operators.wait_outcome(client, keys, sent.request_id, args.wait)
    if outcome is None:
        print(
            f"{operators.safe(args.alarm_id)}: no answer from the gateway within {args.wait:g} s;"
            " the request waits in its stream and is applied when the gateway runs"
        )
        return EXIT_NO_ANSWER
    told = operators.tell(sent, outcome)
    print(told.message, file=sys.stdout if told.applied else sys.stderr)
    return 0 if told.applied else EXIT_NOT_APPLIED


def _alarms(args: argparse.Namespace) -> int:
    from services.alarm_gateway import operators

    config = load_from_args(args)
    records = operators.open_alarms(*_operator_client(config, args.role))
    if not records:
        print("no open alarms")
    for record in records:
        print(operators.format_alarm(record))
    return 0


def _tail(args: argparse.Namespace) -> int:
    from services.alarm_gateway import operators

    config = load_from_args(args)
    stop = stop_on_signals()
    colour = sys.stdout.isatty() and not args.no_colour
    client, keys = _operator_client(config, args.role or args.queue)
    for notice in operators.follow(
        client,
        keys,
        args.queue,
        from_start=args.from_start,
        group=args.group,
        consumer=args.consumer,
        should_stop=stop.is_set,
    ):
        print(operators.format_notice(notice, args.queue, colour=colour), flush=True)
    return 0


def _redis_acl(args: argparse.Namespace) -> int:
    from services.access.redis_acl import acl_file, default_username

    settings = load_from_args(args).settings.redis
    users: dict[RedisRole, tuple[str, str | None]] = {}
    for role in REDIS_ROLES:
        user = settings.users.get(role)
        if user is None:
            users[role] = (default_username(role), None)
            continue
        password = read_password(role, user, os.environ)
        users[role] = (user.username, hashlib.sha256(password.encode()).hexdigest())
    print(acl_file(settings.key_prefix, users), end="")
    return 0


def _healthcheck(args: argparse.Namespace) -> int:
    url = f"http://{args.host}:{args.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as reply:
            return 0 if reply.status == HTTPStatus.OK else 1
    except (OSError, urllib.error.URLError) as err:
        print(f"{url}: {err}", file=sys.stderr)
        return 1


def _demo(args: argparse.Namespace) -> int:
    try:
        from services.demo.run import run_demo
    except ModuleNotFoundError as err:
        print(
            f"nabij demo needs the embedded broker and store ({err.name} is missing): "
            "pip install 'nabij[demo]', or run `make demo` in a checkout",
            file=sys.stderr,
        )
        return EXIT_CONFIG

    return run_demo(speed=args.speed, stop=stop_on_signals(), console_stays=args.console_stays)


def _export_schemas(args: argparse.Namespace) -> int:
    for path in export_schemas(args.directory):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
