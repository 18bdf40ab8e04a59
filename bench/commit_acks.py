"""What the per-device `committed` confirmations cost the proximity service's process.

One batch of `--devices` devices heard: build their confirmations (`committed_acks`) and send
them, QoS 0, to a real mosquitto (started here, open, on a free port), two ways in turn:
- `paho`: one `publish` each on a paho client, as `ProximityService._confirm_to_devices` did
  until issue 14's third pass (each publish also wakes paho's network thread);
- `one write`: PUBLISH packets joined and handed to a reader's `Subscriber.publish`, which
  writes them at once with the acknowledgements pending (as it does now).
Every device has all of its messages up to seq 41 committed, so each gets one. Reported per
device, median of `--runs` batches: CPU of the sending thread, and of the whole process once
the network thread has written them.

    .venv/bin/python -m bench.commit_acks --devices 2000 --runs 7
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from nabij.contract import Topics, encode
from services.proximity.core.acks import committed_acks
from services.proximity.core.state import DeviceState
from services.shell import mqtt_packets
from services.shell.mqtt import MqttEndpoint, make_client
from services.shell.mqtt_ingest import Delivery, Subscriber
from tests.servers import MosquittoServer

DRAIN_S = 0.5
"""After a batch: the network thread writes it meanwhile (sleeping costs no CPU)."""


class _Unread:
    """A sink for a reader that hears nothing."""

    def deliver(self, *_args: object) -> Delivery:
        return Delivery()


def per_device(
    send: Callable[[], None], devices: int, runs: int
) -> tuple[list[float], list[float]]:
    """CPU microseconds per device of each batch: the sending thread's, and the process's."""
    thread_us, process_us = [], []
    for _ in range(runs):
        thread_started, process_started = time.thread_time(), time.process_time()
        send()
        thread_us.append((time.thread_time() - thread_started) / devices * 1e6)
        time.sleep(DRAIN_S)
        process_us.append((time.process_time() - process_started) / devices * 1e6)
    return thread_us, process_us


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    topics = Topics("bench/v1")
    # Seqs 0-40 seen too (no gap in the window): without them no confirmation is sent.
    devices = [DeviceState(f"dev-{i}", boot="b1", last_seq=41) for i in range(args.devices)]
    assert len(committed_acks(devices)) == args.devices, "each device is confirmed"
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoServer(Path(tmp) / "mosquitto", secure=False)
        broker.start()
        endpoint = MqttEndpoint.from_url(broker.url)
        client = make_client(endpoint, "bench-acks", persistent_session=False)
        client.connect(endpoint.host, endpoint.port)
        client.loop_start()
        reader = Subscriber(
            endpoint, "bench-reader", ["bench/unused"], _Unread(), keepalive_s=30,
            connection_ids=itertools.count(1),
        )  # fmt: skip
        reader.start()

        def paho_each() -> None:
            for device_id, ack in committed_acks(devices):
                client.publish(topics.device(device_id, "cmd"), encode(ack), qos=0)

        def one_write() -> None:
            device, topic = topics.device, mqtt_packets.utf8
            reader.publish(
                b"".join(
                    mqtt_packets.publish(topic(device(device_id, "cmd")), encode(ack), qos=0)
                    for device_id, ack in committed_acks(devices)
                )
            )

        try:
            results = {
                "paho": per_device(paho_each, args.devices, args.runs),
                "one write": per_device(one_write, args.devices, args.runs),
            }
        finally:
            reader.stop()
            client.loop_stop()
            client.disconnect()
            broker.stop()
    for way, (thread_us, process_us) in results.items():
        for name, runs in (("sending thread", thread_us), ("process", process_us)):
            print(f"{way}, {name}: " + ", ".join(f"{us:.1f}" for us in runs))
            print(f"  median {statistics.median(runs):.1f} us CPU per device confirmed")


if __name__ == "__main__":
    main()
