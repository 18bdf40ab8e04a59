"""What every `nabij` subcommand shares: the config argument and a stop on SIGTERM/SIGINT.

Subcommands register themselves from their own package (`register(commands)`), so the CLI module
only wires; the packages never import the CLI.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from types import FrameType

from nabij.config import Config, load_config, resolve_directory


def add_config_argument(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--config", default=None, help="config directory (default $NABIJ_CONFIG or ./config)"
    )


def load_from_args(args: argparse.Namespace) -> Config:
    return load_config(resolve_directory(args.config, os.environ))


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for a graceful stop."""
    stop = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop
