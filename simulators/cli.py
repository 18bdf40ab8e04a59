"""`nabij simulate`: drive simulated devices over MQTT.

nabij simulate --scenario NAME [--speed N] [--check] [--write-config DIR]
nabij simulate fleet --pairs N --interval S --duration D [--approaching SHARE] [--write-orders PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nabij.config import SETTINGS_FILE, load_settings, resolve_directory
from services.shell.cli_support import add_config_argument, load_from_args, stop_on_signals

if TYPE_CHECKING:
    from nabij.config import Config
    from simulators.scenario import Scenario

EXIT_MISMATCH = 1
EXIT_USAGE = 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = commands.add_parser(
        "simulate",
        help="drive simulated devices over MQTT (a scenario, or `fleet` for load)",
        description="Play a scenario (--scenario), or `nabij simulate fleet ...` for load.",
    )
    add_config_argument(cmd)
    cmd.add_argument("--scenario", help="scenario name or path to a .toml file")
    cmd.add_argument(
        "--speed",
        type=float,
        default=None,
        help="time acceleration factor (default: the config's clock.speed, normally 1)",
    )
    cmd.add_argument(
        "--check",
        action="store_true",
        help="compare nabij's notices with the scenario's [[expect]]; exit 1 on a difference",
    )
    cmd.add_argument(
        "--write-config",
        metavar="DIR",
        help="write nabij.toml (nabij on the scenario's clock at --speed) and orders.toml for "
        "the scenario, exit",
    )
    cmd.add_argument("--list", action="store_true", help="list the packaged scenarios and exit")
    cmd.add_argument(
        "--credentials",
        type=Path,
        metavar="DIR",
        help="each device connects under its own identity: DIR/ID.password (and DIR/ID.crt, "
        "ID.key on TLS) as `nabij device add --secrets DIR` writes them",
    )
    cmd.set_defaults(handler=_simulate)
    modes = cmd.add_subparsers(dest="mode", metavar="MODE")
    fleet = modes.add_parser("fleet", help="N pairs around Amsterdam at an open-loop rate")
    add_config_argument(fleet)
    fleet.add_argument("--pairs", type=int, required=True, help="offender + victim pairs")
    fleet.add_argument("--interval", type=float, default=30.0, help="seconds between fixes")
    fleet.add_argument("--duration", type=float, default=60.0, help="seconds to run")
    fleet.add_argument("--qos", type=int, choices=(0, 1), default=1)
    fleet.add_argument("--connections", type=int, default=1, help="MQTT connections per process")
    fleet.add_argument("--processes", type=int, default=1, help="publishing processes")
    fleet.add_argument("--seed", type=int, default=1)
    fleet.add_argument(
        "--approaching",
        type=float,
        default=0.0,
        help="share of pairs whose offender approaches his victim, e.g. 0.01",
    )
    fleet.add_argument(
        "--write-orders", metavar="PATH", help="write the fleet's orders.toml and exit"
    )
    fleet.add_argument("--mqtt-url", help="broker URL (default: the config's)")
    fleet.add_argument("--topic-prefix", help="topic prefix (default: the config's)")
    fleet.set_defaults(handler=_fleet)


def _simulate(args: argparse.Namespace) -> int:
    from simulators.runner import ScenarioRun, list_scenarios, load_scenario

    if args.list:
        print("\n".join(list_scenarios()))
        return 0
    if not args.scenario:
        print("nabij simulate: give --scenario NAME (or --list, or `fleet`)", file=sys.stderr)
        return EXIT_USAGE
    scenario = load_scenario(args.scenario)
    if args.write_config:
        return _write_config(scenario, args)
    config = load_from_args(args)
    if args.check:
        return _check(scenario, config, args.speed)
    clock = config.settings.clock
    speed = clock.speed if args.speed is None else args.speed
    if speed != clock.speed:
        print(
            f"note: nabij at {config.directory} runs at clock.speed {clock.speed:g}, the devices "
            f"at x{speed:g}: it will judge their motion and timing {speed / clock.speed:g} times "
            "too fast (see simulators/README.md, Time)",
            file=sys.stderr,
        )
    run = ScenarioRun(
        scenario,
        config.settings.mqtt.url,
        config.settings.mqtt.topic_prefix,
        speed=speed,
        anchor_ms=clock.anchor_ms if speed == clock.speed else None,
        on_progress=print,
        credentials=args.credentials,
        ca_file=config.settings.mqtt.ca_file,
    )
    print(run.run(stop_on_signals()))
    return 0


def _write_config(scenario: Scenario, args: argparse.Namespace) -> int:
    """The current settings (connections, key prefix) with nabij on the scenario's clock."""
    from simulators.timescale import scaled_settings, write_config

    speed = 1.0 if args.speed is None else args.speed
    settings = load_settings(resolve_directory(args.config, os.environ) / SETTINGS_FILE)
    scaled = scaled_settings(settings, speed)
    directory = write_config(Path(args.write_config), scaled, scenario)
    print(f"wrote {directory}: nabij.toml (clock x{speed:g}) and orders.toml for {scenario.name}")
    return 0


def _check(scenario: Scenario, config: Config, speed: float | None) -> int:
    from simulators.check import TimescaleError, run_checked

    try:
        report, result = run_checked(
            scenario, config, speed=speed, stop=stop_on_signals(), on_progress=print
        )
    except TimescaleError as err:
        at = config.settings.clock.speed if speed is None else speed
        print(
            f"cannot check {scenario.name} against {config.directory}: {err}\n"
            "run nabij with the config that "
            f"`nabij simulate --scenario {scenario.name} --speed {at:g} --write-config DIR` "
            "writes (see simulators/README.md, Time).",
            file=sys.stderr,
        )
        return EXIT_USAGE
    print(report)
    print(result)
    return 0 if result.ok else EXIT_MISMATCH


def _fleet(args: argparse.Namespace) -> int:
    from simulators.fleet.generator import run_fleet
    from simulators.fleet.plan import FleetPlan

    plan = FleetPlan(args.pairs, args.interval, seed=args.seed, approaching=args.approaching)
    if args.write_orders:
        Path(args.write_orders).write_text(plan.orders_toml(), encoding="utf-8")
        print(f"wrote {args.pairs} orders to {args.write_orders}")
        return 0
    url, prefix = args.mqtt_url, args.topic_prefix
    if url is None or prefix is None:
        config = load_from_args(args)
        url = url or config.settings.mqtt.url
        prefix = prefix or config.settings.mqtt.topic_prefix
    report = run_fleet(
        plan,
        url,
        prefix,
        duration_s=args.duration,
        qos=args.qos,
        connections=args.connections,
        processes=args.processes,
        stop=stop_on_signals(),
        on_progress=print,
    )
    print(report)
    return 0
