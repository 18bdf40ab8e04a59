"""What the per-device `committed` confirmations cost the proximity service's thread.

One batch of `--devices` devices heard: build their confirmations (`committed_acks`) and publish
them, QoS 0, on a paho client connected to a real mosquitto (started here, open, on a free port),
as `ProximityService._confirm_to_devices` does after each commit. Reported: microseconds per
device (median of `--runs` batches), to hold against the core's cost per fix (docs/benchmarks.md).

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
    devices = [DeviceState(f"dev-{i}", boot="b1", last_seq=41) for i in range(args.devices)]
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoServer(Path(tmp) / "mosquitto", secure=False)
        broker.start()
        endpoint = MqttEndpoint.from_url(broker.url)
        client = make_client(endpoint, "bench-acks", persistent_session=False)
        client.connect(endpoint.host, endpoint.port)
        client.loop_start()
        per_device_us = []
        try:
            for _ in range(args.runs):
                started = time.perf_counter()
                for device_id, ack in committed_acks(devices):
                    client.publish(topics.device(device_id, "cmd"), encode(ack), qos=0)
                per_device_us.append((time.perf_counter() - started) / args.devices * 1e6)
                time.sleep(0.5)  # let paho's thread drain its queue between batches
        finally:
            client.loop_stop()
            client.disconnect()
            broker.stop()
    print(", ".join(f"{us:.1f}" for us in per_device_us))
    print(f"median: {statistics.median(per_device_us):.1f} us per device confirmed")


if __name__ == "__main__":
    main()
