"""`nabij simulate`: drive simulated devices over MQTT."""

from __future__ import annotations

import argparse

from nabij.cli_support import add_config_argument, load_from_args, stop_on_signals


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = commands.add_parser("simulate", help="drive simulated devices over MQTT")
    add_config_argument(cmd)
    cmd.add_argument("--scenario", required=True, help="scenario name or path to a .toml file")
    cmd.add_argument("--speed", type=float, default=1.0, help="time acceleration factor")
    cmd.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from simulators.runner import ScenarioRun, load_scenario

    config = load_from_args(args)
    scenario = load_scenario(args.scenario)
    run = ScenarioRun(
        scenario,
        config.settings.mqtt.url,
        config.settings.mqtt.topic_prefix,
        speed=args.speed,
        on_progress=print,
    )
    report = run.run(stop_on_signals())
    print(report)
    return 0
