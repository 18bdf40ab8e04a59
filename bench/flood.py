"""A press and an approach during a junk flood: how late do they reach the dispatch queues?

Starts its own mosquitto and redis-server (as the tests do) and `nabij run` (both services) as a
subprocess. One hostile client (`simulators.fleet.wire`, QoS 1, a separate process) publishes
`--junk` messages of 42 junk bytes as fast as the broker takes them on one known device's topic
(`--topic fix`, or `event`). `--press-after` seconds into the flood a victim presses the alarm
button and, at the same moment, an offender's fix 40 m from his victim arrives (critical
distance: the alarm opens at once). Reported per run: press to police notice, close fix to the
`proximity_alarm` notice at probation (both measured here, publish to the notice appearing in
Redis), the flood's rate and what nabij refused. `--junk 0` is the baseline.

    .venv/bin/python -m bench.flood --junk 0 --runs 3
    .venv/bin/python -m bench.flood --junk 1000000 --topic fix --runs 3
    .venv/bin/python -m bench.flood --junk 1000000 --topic event --runs 3
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import time
from pathlib import Path

import redis

from bench.pipeline import PREFIX, proximity, report_runs, scrape
from nabij.contract import DeviceEvent, Fix, Topics, encode, notice_decoder
from nabij.keys import Keys, Shard
from nabij.streams import read_streams
from services.shell.mqtt import MqttEndpoint, make_client
from simulators.fleet.wire import PublishConnection, topic_field

JUNK = b"\x07junk-not-json-" + b"x" * 27  # 42 bytes
BATCH = 500
HOME = (52.37881, 4.90005)
METRES_PER_DEG_LAT = 111_200.0
IDLE_PAIRS = 100


def orders() -> str:
    """The flooded pair O-0, the measured pair O-1, and idle pairs (a realistic device index)."""
    return "".join(
        f'[[order]]\nid = "O-{i}"\noffender_device = "ank-{i}"\n'
        f'victim_devices = ["vic-{i}"]\nalarm_m = 500\n\n'
        for i in range(IDLE_PAIRS + 2)
    )


def flood(url: str, topic: str, count: int) -> None:
    """The hostile client: `count` QoS 1 junk messages, as fast as the broker acknowledges."""
    connection = PublishConnection(MqttEndpoint.from_url(url), "hostile", qos=1)
    field = topic_field(topic)
    sent = 0
    while sent < count:
        n = min(BATCH, count - sent)
        connection.send((connection.packet(field, JUNK) for _ in range(n)), n)
        sent += n
    connection.drain(120)
    connection.close()


def north_of(metres: float) -> tuple[float, float]:
    return HOME[0] + metres / METRES_PER_DEG_LAT, HOME[1]


def refused(metrics: str) -> float:
    pattern = r"nabij_messages_refused_total\{[^}]*\} ([0-9.e+]+)"
    return sum(float(m) for m in re.findall(pattern, metrics))


def one_run(junk: int, kind: str, press_after_s: float, workdir: Path) -> dict[str, float]:
    topics, keys = Topics(f"{PREFIX}"), Keys("bench")
    with proximity(orders(), workdir, command="run") as running:
        store = redis.Redis.from_url(running.redis_url)
        endpoint = MqttEndpoint.from_url(running.mqtt_url)
        device = make_client(endpoint, "devices", persistent_session=False)
        device.connect(endpoint.host, endpoint.port)
        device.loop_start()
        now = time.time_ns() // 1_000_000

        def send(kind: str, device_id: str, payload: bytes) -> None:
            info = device.publish(topics.device(device_id, kind), payload, qos=1)  # type: ignore[arg-type]  # kind is a topic kind
            info.wait_for_publish(timeout=60)

        send("fix", "vic-1", encode(Fix("vic-1", 1, now - 5_000, *HOME, 5.0)))
        send("fix", "ank-1", encode(Fix("ank-1", 1, now - 60_000, *north_of(3000), 5.0)))
        wait_for(lambda: store.exists(keys.proximity(Shard()).device_state("ank-1")) == 1)
        # Nothing is in the dispatch queues before the press: read them from their start.
        streams = {keys.dispatch("police"): b"0-0", keys.dispatch("probation"): b"0-0"}
        hostile = multiprocessing.Process(
            target=flood,
            args=(running.mqtt_url, topics.device("ank-0", kind), junk),  # type: ignore[arg-type]  # as above
        )
        flood_started = time.monotonic()
        if junk:
            hostile.start()
            time.sleep(press_after_s)
        now = time.time_ns() // 1_000_000
        sent_at = time.monotonic()
        send("event", "vic-1", encode(DeviceEvent("vic-1", 2, now, "aware_button")))
        send("fix", "ank-1", encode(Fix("ank-1", 2, now, *north_of(40), 5.0)))
        seen = wait_for_notices(store, streams)
        if junk:
            hostile.join(timeout=600)
        flood_s = time.monotonic() - flood_started
        metrics = scrape(running.metrics_port)
        device.loop_stop()
        device.disconnect()
    return {
        "press_s": seen["aware_button"] - sent_at,
        "approach_s": seen["proximity_alarm"] - sent_at,
        "flood_per_s": junk / flood_s if junk else 0.0,
        "refused": refused(metrics),
    }


def wait_for(check: object, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]  # a callable
        if time.monotonic() > deadline:
            raise TimeoutError("setup did not complete")
        time.sleep(0.01)


def wait_for_notices(store: redis.Redis, streams: dict[str, bytes]) -> dict[str, float]:
    """When (monotonic) the press's police notice and the alarm's probation notice appeared."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 600
    while len(seen) < 2 and time.monotonic() < deadline:
        for stream, (entry_id, fields) in read_streams(store, streams, block_ms=1000):
            streams[stream] = entry_id
            notice = notice_decoder.decode(fields[b"notice"])
            police = stream.endswith(":police")
            if notice.event == "opened" and (
                (notice.kind == "aware_button" and police)
                or (notice.kind == "proximity_alarm" and not police)
            ):
                seen.setdefault(notice.kind, time.monotonic())
    if len(seen) < 2:
        raise TimeoutError(f"notices seen: {sorted(seen)}")
    return seen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--junk", type=int, default=1_000_000)
    parser.add_argument("--topic", choices=["fix", "event"], default="fix")
    parser.add_argument("--press-after", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    report_runs(
        args.runs,
        lambda workdir: one_run(args.junk, args.topic, args.press_after, workdir),
        digits=3,
    )


if __name__ == "__main__":
    main()
