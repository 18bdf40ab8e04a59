"""Backlog storm: every device uploads its backlog at once while alarm buttons are pressed.

After a regional outage every device comes back with the fixes it stored (a JSON array of up to
1,000 fixes a message, `fix_batch`). Starts its own Mosquitto and Redis (AOF on) and `nabij run`
(proximity and gateway) with the orders of `--devices / 2` pairs and of `--presses` press
victims. One publisher process (`simulators.fleet.wire`, QoS 1) sends each device's backlog of
`--backlog` fixes as fast as the broker takes them; meanwhile this process has a victim press the
alarm button every `--press-every` seconds from when the storm reaches nabij (each press another
victim: each opens its own alarm). Reported: press to police notice (publish wall time to the
notice's Redis id) p50/p99 and max, and by position: how many of the storm's fixes nabij had not
yet taken in when each press's notice was there (`nabij_messages_received_total`, which counts
each fix of a backlog and each press twice, once per connection; read when the notice is seen).

    .venv/bin/python -m bench.storm --devices 1000 --backlog 1000 --presses 20
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Final

import redis

from bench.latency import entry_ms, quantiles
from bench.pipeline import KEY_PREFIX, PREFIX, proximity, received, scrape
from nabij import streams
from nabij.contract import DeviceEvent, Fix, Topics, encode, notice_decoder
from nabij.keys import Keys
from services.shell.mqtt import MqttEndpoint
from simulators.fleet.wire import PublishConnection, topic_field

HOME: Final = (52.37, 4.90)
FIX_SPACING_MS: Final = 10_000
# Backlogs in flight before waiting for the broker's acknowledgements (each up to ~120 KB).
WINDOW: Final = 200


def orders(pairs: int, presses: int) -> str:
    storm = "".join(
        f'[[order]]\nid = "S-{i}"\noffender_device = "ank-{i}"\n'
        f'victim_devices = ["vic-{i}"]\nalarm_m = 500\n\n'
        for i in range(pairs)
    )
    pressing = "".join(
        f'[[order]]\nid = "PRESS-{k}"\noffender_device = "pank-{k}"\n'
        f'victim_devices = ["pvic-{k}"]\nalarm_m = 500\n\n'
        for k in range(presses)
    )
    return storm + pressing


def backlog(device: str, index: int, fixes: int, now_ms: int) -> bytes:
    """A device's stored fixes, oldest first, ending a little before now; pairs 20 km apart."""
    lat = HOME[0] + (index % 1000) * 0.0005 + (0.18 if device.startswith("vic") else 0.0)
    first_ts = now_ms - fixes * FIX_SPACING_MS
    return encode_list(
        [
            Fix(device, seq + 1, first_ts + seq * FIX_SPACING_MS, lat, HOME[1], 8.0)
            for seq in range(fixes)
        ]
    )


def encode_list(fixes: list[Fix]) -> bytes:
    return b"[" + b",".join(encode(f) for f in fixes) + b"]"


def upload(url: str, devices: int, fixes: int) -> None:
    """The storm: every device's backlog, one message each, QoS 1, as fast as acknowledged."""
    topics = Topics(PREFIX)
    connection = PublishConnection(MqttEndpoint.from_url(url), "bench-storm", qos=1)
    now = time.time_ns() // 1_000_000
    for i in range(devices):
        device = f"{'ank' if i % 2 == 0 else 'vic'}-{i // 2}"
        payload = backlog(device, i // 2, fixes, now)
        connection.send([connection.packet(topic_field(topics.device(device, "fix")), payload)], 1)
        while connection.unacked > WINDOW:
            time.sleep(0.001)
            connection.poll()
    connection.drain(600)
    connection.close()


def run(devices: int, fixes: int, presses: int, press_every_s: float) -> dict[str, float]:
    topics, keys = Topics(PREFIX), Keys(KEY_PREFIX)
    with (
        tempfile.TemporaryDirectory() as tmp,
        proximity(orders(devices // 2, presses), Path(tmp), command="run") as running,
    ):
        store = redis.Redis.from_url(running.redis_url)
        pressing = PublishConnection(MqttEndpoint.from_url(running.mqtt_url), "bench-press", qos=1)
        storm = multiprocessing.get_context("spawn").Process(
            target=upload, args=(running.mqtt_url, devices, fixes)
        )
        since_ms = time.time_ns() // 1_000_000
        started = time.monotonic()
        storm.start()
        pressed: dict[str, int] = {}
        noticed: dict[str, int] = {}
        not_taken: list[float] = []
        # The first press comes once the storm reaches nabij, then one every `press_every_s`.
        while received(scrape(running.metrics_port)) == 0:
            time.sleep(0.05)
        next_press = time.monotonic() + press_every_s
        deadline = time.monotonic() + 1800
        while len(noticed) < presses and time.monotonic() < deadline:
            if len(pressed) < presses and time.monotonic() >= next_press:
                k = len(pressed)
                now = time.time_ns() // 1_000_000
                event = DeviceEvent(f"pvic-{k}", 1, now, "aware_button")
                field = topic_field(topics.device(f"pvic-{k}", "event"))
                pressing.send([pressing.packet(field, encode(event))], 1)
                pressed[f"PRESS-{k}"] = now
                next_press += press_every_s
            pressing.poll()
            new = [
                (order_id, entry_ms(entry_id))
                for entry_id, fields in streams.entries(
                    store, keys.dispatch("police"), min_id=f"{since_ms}-0"
                )
                if (notice := notice_decoder.decode(fields[b"notice"])).kind == "aware_button"
                and notice.event == "opened"
                and (order_id := notice.order_id) is not None
                and order_id not in noticed
            ]
            if new:
                taken = received(scrape(running.metrics_port)) - 2 * len(pressed)
                waiting = devices * fixes - max(0.0, taken)
                for order_id, at_ms in new:
                    noticed[order_id] = at_ms
                    not_taken.append(waiting)
            time.sleep(0.05)
        storm.join(timeout=1800)
        while received(scrape(running.metrics_port)) < devices * fixes + presses:
            time.sleep(0.2)
        storm_s = time.monotonic() - started
        pressing.close()
    latency = quantiles([noticed[o] - pressed[o] for o in noticed])
    return {
        "presses": latency["n"],
        "press_p50_ms": latency["p50"],
        "press_p99_ms": latency["p99"],
        "press_max_ms": max(noticed[o] - pressed[o] for o in noticed),
        "storm_fixes_not_taken_median": statistics.median(not_taken),
        "storm_fixes_per_s": devices * fixes / storm_s,
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--backlog", type=int, default=1000, help="fixes per device (<= 1000)")
    parser.add_argument("--presses", type=int, default=20)
    parser.add_argument("--press-every", type=float, default=1.0)
    args = parser.parse_args(argv)
    result = run(args.devices, args.backlog, args.presses, args.press_every)
    print(", ".join(f"{k} {v:,.1f}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
