"""`nabij demo`: the whole alarm path on one screen, with nothing installed but Python.

Without `NABIJ_MQTT_URL` / `NABIJ_REDIS_URL` it starts an embedded MQTT broker and an embedded
Redis-protocol store; with them it uses the real ones (under a fresh key and topic prefix, so
earlier runs do not mix in). Both services run in this process; the `approach` and `aware`
scenarios drive simulated devices; the dispatch queues are printed as a dispatcher would read them.
Service logs go to `var/demo/nabij.log`.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import redis
import uvicorn

from nabij.clock import scaled_clock, wall_clock_ms
from nabij.config import (
    MQTT_URL_ENV,
    REDIS_URL_ENV,
    ClockSettings,
    Config,
    Order,
    load_settings,
)
from nabij.contract import QUEUE_NAMES, AckRequest, QueueName
from nabij.keys import Keys
from services.alarm_gateway import operators
from services.console.identity import Operators
from services.console.server import console_server, start_on_thread
from services.demo.embedded import EmbeddedBroker, EmbeddedStore
from services.runner import run_services
from services.shell.logs import configure_logging
from services.shell.redis_io import connect
from simulators.runner import ScenarioRun, load_scenario

DEMO_SETTINGS = Path(__file__).resolve().parents[2] / "config" / "demo" / "nabij.toml"
LOG_FILE = Path("var/demo/nabij.log")
SERVICES = ("proximity", "gateway")
BOLD, DIM, RESET = "\033[1m", "\033[2m", "\033[0m"


_print_lock = threading.Lock()


def show(line: str) -> None:
    """One whole line at a time: two queue followers print side by side."""
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def say(text: str) -> None:
    show(f"{BOLD}== {text}{RESET}")


def run_demo(*, speed: float, stop: threading.Event, console_stays: bool = False) -> int:
    with ExitStack() as resources:
        LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
        log_stream = resources.enter_context(LOG_FILE.open("a", encoding="utf-8"))
        configure_logging("info", "demo", stream=log_stream)
        mqtt_url = os.environ.get(MQTT_URL_ENV)
        redis_url = os.environ.get(REDIS_URL_ENV)
        if not mqtt_url:
            broker = resources.enter_context(EmbeddedBroker())
            mqtt_url = broker.url
            say(f"embedded MQTT broker on {mqtt_url}")
        if not redis_url:
            store = resources.enter_context(EmbeddedStore())
            redis_url = store.url
            say(f"embedded Redis-protocol store on {redis_url}")
        config = _demo_config(mqtt_url, redis_url, speed)
        console = _start_console(config)
        resources.callback(setattr, console, "should_exit", True)
        result = _run(config, stop)
        if console_stays and result == 0:
            say("the console stays up until Ctrl-C")
            stop.clear()
            stop.wait()
        return result


def _demo_config(mqtt_url: str, redis_url: str, speed: float) -> Config:
    """The demo settings under a fresh prefix, nabij on the scenarios' clock (x `speed`)."""
    settings = load_settings(DEMO_SETTINGS, {MQTT_URL_ENV: mqtt_url, REDIS_URL_ENV: redis_url})
    run_id = uuid.uuid4().hex[:6]
    settings = settings.model_copy(
        update={
            "clock": ClockSettings(speed=speed, anchor_ms=wall_clock_ms()),
            "mqtt": settings.mqtt.model_copy(
                update={
                    "topic_prefix": f"{settings.mqtt.topic_prefix}/{run_id}",
                    "client_id": f"{settings.mqtt.client_id}-{run_id}",
                }
            ),
            "redis": settings.redis.model_copy(
                update={"key_prefix": f"{settings.redis.key_prefix}:{run_id}"}
            ),
        }
    )
    orders: dict[str, Order] = {}
    for name in ("approach", "aware"):
        for order in load_scenario(name).order:
            orders[order.id] = order
    return Config(directory=DEMO_SETTINGS.parent, settings=settings, orders=tuple(orders.values()))


def _start_console(config: Config) -> uvicorn.Server:
    """The dispatcher console on the demo's store, with one demo operator per role."""
    settings = config.settings
    client = connect(settings.redis.url)
    people = Operators(client, Keys(settings.redis.key_prefix))
    logins = []
    for role in ("probation", "police"):
        name, password = f"{role}-demo", secrets.token_urlsafe(9)
        people.add(name, role, password)
        logins.append(f"{role}: {name} / {password}")
    port = settings.console.port if port_free(settings.console.port) else 0
    server = console_server(config, scaled_clock(settings.clock.timescale()), port=port,
                            client=client)  # fmt: skip
    start_on_thread(server)
    bound = server.servers[0].sockets[0].getsockname()
    say(f"dispatcher console on http://{bound[0]}:{bound[1]}/ (log in as {'; '.join(logins)})")
    return server


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _run(config: Config, stop: threading.Event) -> int:
    clock = config.settings.clock
    keys = Keys(config.settings.redis.key_prefix)
    client = connect(config.settings.redis.url)
    services = threading.Thread(
        target=run_services, args=(config, SERVICES, stop, None), name="services", daemon=True
    )
    services.start()
    if not _wait(lambda: all(client.exists(keys.health(n)) for n in SERVICES), 30, stop):
        show(f"services did not become ready; see {LOG_FILE}")
        stop.set()
        return 1
    say(f"proximity and gateway running; logs in {LOG_FILE}")
    for queue in QUEUE_NAMES:
        threading.Thread(target=_print_queue, args=(client, keys, queue, stop), daemon=True).start()

    prefix = config.settings.mqtt.topic_prefix
    url = config.settings.mqtt.url
    approach, aware = (
        ScenarioRun(
            load_scenario(name),
            url,
            prefix,
            speed=clock.speed,
            anchor_ms=clock.anchor_ms,
            announce_offline=False,
        )
        for name in ("approach", "aware")
    )
    say(
        f"scenario 'approach' at {clock.speed:g}x: an offender walks towards the victim's home, "
        "lingers, and leaves"
    )
    say("scenario 'aware': another victim presses the alarm button")
    runs = [
        threading.Thread(target=run.run, args=(stop,), daemon=True) for run in (approach, aware)
    ]
    for run_thread in runs:
        run_thread.start()
    for run_thread in runs:
        while run_thread.is_alive() and not stop.is_set():
            run_thread.join(timeout=0.5)
    if stop.is_set():
        return 130
    _wait(lambda: False, 3, stop)  # let the last notices arrive
    _acknowledge_everything(client, keys, scaled_clock(clock.timescale()), stop)
    say("done")
    stop.set()
    services.join(timeout=10)
    return 0


def _acknowledge_everything(
    client: redis.Redis, keys: Keys, now_ms: Callable[[], int], stop: threading.Event
) -> None:
    records = operators.open_alarms(client, keys)
    say(f"{len(records)} alarms open; the dispatcher acknowledges the unacknowledged ones:")
    for record in records:
        show(f"   {operators.format_alarm(record)}")
        if record.acknowledged_by is None:
            operators.request(
                client,
                keys,
                AckRequest,
                record.alarm_id,
                by="demo-dispatcher",
                note="seen in the demo",
                now_ms=now_ms(),
            )
    _wait(lambda: all(r.acknowledged_by for r in operators.open_alarms(client, keys)), 10, stop)


def _print_queue(client: redis.Redis, keys: Keys, queue: QueueName, stop: threading.Event) -> None:
    try:
        for notice in operators.follow(
            client, keys, queue, from_start=True, block_ms=200, should_stop=stop.is_set
        ):
            show(operators.format_notice(notice, queue, colour=True))
    except redis.RedisError:
        if not stop.is_set():
            raise


def _wait(check: Callable[[], bool], timeout_s: float, stop: threading.Event) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        if check():
            return True
        stop.wait(0.1)
    return check()
