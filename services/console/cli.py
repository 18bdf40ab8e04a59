"""`nabij console` and `nabij operator add|remove` (one identity model for the CLI and console)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from nabij.clock import scaled_clock
from nabij.keys import Keys
from services.console.identity import IdentityError, Operators
from services.shell.cli_support import add_config_argument, load_from_args
from services.shell.logs import configure_logging
from services.shell.redis_io import connect_as

EXIT_NOT_FOUND = 1
EXIT_INVALID = 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = commands.add_parser("console", help="serve the dispatcher console (docs/console.md)")
    add_config_argument(cmd)
    cmd.add_argument("--host", default=None, help="address to bind (default: [console] host)")
    cmd.add_argument("--port", type=int, default=None, help="port (default: [console] port)")
    cmd.set_defaults(handler=_console)

    group = commands.add_parser("operator", help="add or remove a console operator")
    actions = group.add_subparsers(dest="operator_action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create an operator, or give one a new password or role")
    add_config_argument(add)
    add.add_argument("name")
    add.add_argument("--role", choices=["probation", "police"], required=True)
    add.add_argument(
        "--password-file", type=Path, default=None, help="read the password here (default: ask)"
    )
    add.set_defaults(handler=_add)
    remove = actions.add_parser("remove", help="remove an operator")
    add_config_argument(remove)
    remove.add_argument("name")
    remove.set_defaults(handler=_remove)


def _console(args: argparse.Namespace) -> int:
    from services.console.server import console_server

    config = load_from_args(args)
    configure_logging(config.settings.log.level, "console")
    clock = scaled_clock(config.settings.clock.timescale())
    console_server(config, clock, host=args.host, port=args.port).run()
    return 0


def _operators(args: argparse.Namespace) -> Operators:
    settings = load_from_args(args).settings.redis
    return Operators(connect_as(settings, "console"), Keys(settings.key_prefix))


def _add(args: argparse.Namespace) -> int:
    if args.password_file is not None:
        password = args.password_file.read_text(encoding="utf-8").rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("nabij operator add: the passwords differ; nothing changed", file=sys.stderr)
            return EXIT_INVALID
    try:
        _operators(args).add(args.name, args.role, password)
    except IdentityError as err:
        print(f"nabij operator add: refused, nothing changed: {err}", file=sys.stderr)
        return EXIT_INVALID
    print(f"operator {args.name!r} ({args.role}) saved")
    return 0


def _remove(args: argparse.Namespace) -> int:
    if not _operators(args).remove(args.name):
        print(f"nabij operator remove: no operator {args.name!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(f"operator {args.name!r} removed")
    return 0
