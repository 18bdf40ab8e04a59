"""`nabij`: the one console script. It only parses arguments and wires parts together."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import services.devices
import services.replay.cli
import simulators.cli
from nabij.cli_support import add_config_argument, load_from_args, stop_on_signals
from nabij.clock import scaled_clock
from nabij.config import ConfigError, load_config, resolve_directory
from nabij.contract import AckRequest, ResolveRequest
from nabij.keys import Keys
from nabij.logs import configure_logging
from nabij.redis_io import connect
from nabij.schemas import export_schemas

# Packages that bring their own subcommands.
SUBCOMMAND_PACKAGES = (
    simulators.cli.register,
    services.replay.cli.register,
    services.devices.register,
)
EXIT_CONFIG = 2
EXIT_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
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


def _parser() -> argparse.ArgumentParser:
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
        cmd.set_defaults(handler=_serve, services=name)

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
        cmd.set_defaults(handler=_operate, action=name)

    cmd = commands.add_parser("alarms", help="list open alarms")
    add_config_argument(cmd)
    cmd.set_defaults(handler=_alarms)

    cmd = commands.add_parser("tail", help="follow a dispatch queue")
    add_config_argument(cmd)
    cmd.add_argument("queue", choices=["probation", "police"])
    cmd.add_argument("--from-start", action="store_true", help="show the queue from its start")
    cmd.add_argument("--group", default=None, help="read as this consumer group (each notice once)")
    cmd.add_argument("--consumer", default="terminal")
    cmd.add_argument("--no-colour", action="store_true")
    cmd.set_defaults(handler=_tail)

    cmd = commands.add_parser("demo", help="embedded broker and store, both services, scenarios")
    cmd.add_argument("--speed", type=float, default=20.0)
    cmd.set_defaults(handler=_demo)

    for register in SUBCOMMAND_PACKAGES:
        register(commands)

    cmd = commands.add_parser("export-schemas", help="write JSON Schemas of the wire contract")
    cmd.add_argument("directory", type=Path, default=Path("docs/schemas"), nargs="?")
    cmd.set_defaults(handler=_export_schemas)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from nabij.health import HealthServer
    from services.runner import run_services

    config = load_from_args(args)
    configure_logging(config.settings.log.level, args.services)
    health = HealthServer(args.metrics_port) if args.metrics_port is not None else None
    wanted = ("proximity", "gateway") if args.services == "run" else (args.services,)
    try:
        return run_services(config, wanted, stop_on_signals(), health)
    finally:
        if health is not None:
            health.stop()


def _check_config(args: argparse.Namespace) -> int:
    directory = resolve_directory(args.directory, os.environ)
    config = load_config(directory)
    pairs = sum(len(order.victim_devices) for order in config.orders)
    print(f"{directory}: valid ({len(config.orders)} orders, {pairs} pairs)")
    return 0


def _operate(args: argparse.Namespace) -> int:
    from services.alarm_gateway import operators

    config = load_from_args(args)
    keys = Keys(config.settings.redis.key_prefix)
    client = connect(config.settings.redis.url)
    # nabij's clock: a simulation may run it on a scenario's clock.
    now_ms = scaled_clock(config.settings.clock.timescale())()
    kind: type[AckRequest] | type[ResolveRequest]
    if args.action == "ack":
        kind, applied = AckRequest, operators.ack_applied
    else:
        kind, applied = ResolveRequest, operators.resolve_applied
    try:
        operators.request(
            client, keys, kind, args.alarm_id, by=args.by, note=args.note, now_ms=now_ms
        )
    except operators.OperatorError as err:
        print(f"nabij {args.action}: {err}", file=sys.stderr)
        return EXIT_FAILED
    done = "acknowledged" if args.action == "ack" else "resolved"
    if operators.wait_for(lambda: applied(client, keys, args.alarm_id), args.wait):
        print(f"{args.alarm_id} {done} by {args.by}")
    else:
        print(f"{args.alarm_id}: request queued; the gateway will apply it when it runs")
    return 0


def _alarms(args: argparse.Namespace) -> int:
    from services.alarm_gateway import operators

    config = load_from_args(args)
    records = operators.open_alarms(
        connect(config.settings.redis.url), Keys(config.settings.redis.key_prefix)
    )
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
    for notice in operators.follow(
        connect(config.settings.redis.url),
        Keys(config.settings.redis.key_prefix),
        args.queue,
        from_start=args.from_start,
        group=args.group,
        consumer=args.consumer,
        should_stop=stop.is_set,
    ):
        print(operators.format_notice(notice, args.queue, colour=colour), flush=True)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from services.demo import run_demo

    return run_demo(speed=args.speed, stop=stop_on_signals())


def _export_schemas(args: argparse.Namespace) -> int:
    for path in export_schemas(args.directory):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
