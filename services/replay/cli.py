"""`nabij record` (device traffic to JSON lines) and `nabij replay` (a log through the core)."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from services.shell.cli_support import add_config_argument, load_from_args, stop_on_signals


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = commands.add_parser("record", help="record device traffic as JSON lines for replay")
    add_config_argument(cmd)
    cmd.add_argument("--out", required=True, type=Path, help="log file to write (appends)")
    cmd.add_argument("--count", type=int, default=None, help="stop after this many messages")
    cmd.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    cmd.set_defaults(handler=_record)

    cmd = commands.add_parser("replay", help="run a recorded log through the core: alarm timeline")
    cmd.add_argument("log", type=Path)
    add_config_argument(cmd)
    cmd.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="what-if: proximity.enter_dwell_s=5, order.ORD-1.alarm_m=300 (repeatable)",
    )
    cmd.add_argument("--json", action="store_true", help="one JSON object per line")
    cmd.add_argument("--no-commands", action="store_true", help="leave device commands out")
    cmd.add_argument(
        "--tail", type=float, default=0.0, help="keep ticking this many seconds after the log"
    )
    cmd.set_defaults(handler=_replay)


def _replay(args: argparse.Namespace) -> int:
    from services.replay.records import read_log
    from services.replay.timeline import render, replay
    from services.replay.whatif import apply_overrides

    config = apply_overrides(load_from_args(args), args.set)
    try:
        records, bad = read_log(args.log)
    except OSError as err:
        print(f"nabij replay: cannot read {args.log}: {err}", file=sys.stderr)
        return 1
    timeline = replay(config, records, tail_s=args.tail)
    sys.stdout.write(render(timeline, as_json=args.json, commands=not args.no_commands))
    if bad:
        print(f"nabij replay: skipped {bad} unreadable lines", file=sys.stderr)
    return 0


def _record(args: argparse.Namespace) -> int:
    from nabij.contract import Topics
    from services.replay.records import encode_line
    from services.shell.mqtt import MqttEndpoint, make_client

    config = load_from_args(args)
    stop = stop_on_signals()
    topics = Topics(config.settings.mqtt.topic_prefix)
    endpoint = MqttEndpoint.from_settings(config.settings.mqtt)
    client = make_client(endpoint, f"nabij-record-{os.getpid()}", persistent_session=False)
    lock = threading.Lock()
    written = 0
    subscribed = threading.Event()

    def on_connect(c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        if not getattr(rc, "is_failure", False):
            client.subscribe([(topic, 1) for topic in topics.subscriptions()])

    def on_message(_c: object, _u: object, message: object) -> None:
        nonlocal written
        received_ms = time.time_ns() // 1_000_000
        topic: str = message.topic  # type: ignore[attr-defined]  # paho MQTTMessage
        payload = bytes(message.payload)  # type: ignore[attr-defined]  # as above
        with lock:
            out.write(encode_line(topic, payload, received_ms) + "\n")
            out.flush()
            written += 1
            if args.count is not None and written >= args.count:
                stop.set()

    client.on_connect = on_connect
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = on_message
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out: TextIO
    with args.out.open("a", encoding="utf-8") as out:
        client.connect_async(endpoint.host, endpoint.port, config.settings.mqtt.keepalive_s)
        client.loop_start()
        try:
            if subscribed.wait(10):
                print(f"recording {', '.join(topics.subscriptions())} to {args.out}", flush=True)
            stop.wait(args.duration)
        finally:
            client.disconnect()
            client.loop_stop()
    print(f"recorded {written} messages", flush=True)
    return 0
