"""What the per-device `committed` confirmations cost the proximity service's thread.

One batch of `--devices` devices heard: build their confirmations (`committed_acks`) and publish
them, QoS 0, on a paho client connected to a real mosquitto (started here, open, on a free port),
as `ProximityService._confirm_to_devices` does after each commit. Every device has all of its
messages up to seq 41 committed, so each gets one. Reported per device, median of `--runs`
batches: CPU of the publishing thread, and of the whole process once paho's own thread has
written them, to hold against the core's cost per fix (docs/benchmarks.md).

    .venv/bin/python -m bench.commit_acks --devices 2000 --runs 7
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from nabij.contract import Topics, encode
from services.proximity.core.acks import committed_acks
from services.proximity.core.state import DeviceState
from services.shell.mqtt import MqttEndpoint, make_client
from tests.servers import MosquittoServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    topics = Topics("bench/v1")
    # Seqs 0-40 seen too: without them the window holds a gap and no confirmation is sent.
    seen = (1 << 41) - 1
    devices = [
        DeviceState(f"dev-{i}", boot="b1", last_seq=41, seen_below=seen)
        for i in range(args.devices)
    ]
    assert len(committed_acks(devices)) == args.devices, "each device is confirmed"
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoServer(Path(tmp) / "mosquitto", secure=False)
        broker.start()
        endpoint = MqttEndpoint.from_url(broker.url)
        client = make_client(endpoint, "bench-acks", persistent_session=False)
        client.connect(endpoint.host, endpoint.port)
        client.loop_start()
        thread_us, process_us = [], []
        try:
            for _ in range(args.runs):
                thread_started, process_started = time.thread_time(), time.process_time()
                for device_id, ack in committed_acks(devices):
                    client.publish(topics.device(device_id, "cmd"), encode(ack), qos=0)
                thread_us.append((time.thread_time() - thread_started) / args.devices * 1e6)
                time.sleep(0.5)  # paho's thread writes them meanwhile
                process_us.append((time.process_time() - process_started) / args.devices * 1e6)
        finally:
            client.loop_stop()
            client.disconnect()
            broker.stop()
    for name, runs in (
        ("publishing thread", thread_us),
        ("process, paho's thread too", process_us),
    ):
        print(f"{name}: " + ", ".join(f"{us:.1f}" for us in runs))
        print(f"  median {statistics.median(runs):.1f} us CPU per device confirmed")


if __name__ == "__main__":
    main()
