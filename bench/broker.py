"""The broker's own ceiling: how many QoS 1 fixes a second Mosquitto relays between C clients.

`publishers` `mosquitto_pub -l -q 1` processes each read their share of the payloads on stdin
(one fix a line, the same JSON nabij gets) and publish it on a device's fix topic; one
`mosquitto_sub -q 1 -C N` subscribed to every device's fix topic counts them. The rate is N over
the wall time from starting the publishers to the subscriber's exit (it has then received all
N). Nothing Python is on the message path, so this is what the broker can do on this machine.

Two traps of mosquitto_pub 2.0 measured here: at the end of its input it disconnects at once and
drops what it still queued (a third of 100,000 lines lost), so stdin stays open until the
subscriber has counted everything; and with a huge in-flight window (`-M 65535`) the broker fell
behind and lost messages, so the window is 100 (20 was slower, 100 the best of 20/100/65535).
"""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Final

from nabij.contract import Topics
from services.shell.mqtt import MqttEndpoint

PUB_INFLIGHT: Final = 100
SUBSCRIBED_WAIT_S: Final = 1.0


def _auth(endpoint: MqttEndpoint) -> list[str]:
    args = ["-h", endpoint.host, "-p", str(endpoint.port)]
    if endpoint.username:
        args += ["-u", endpoint.username, "-P", endpoint.password or ""]
    return args


def ceiling(url: str, prefix: str, payloads: list[bytes], publishers: int) -> float:
    """Messages a second from `publishers` C publishers to one C subscriber, all QoS 1."""
    endpoint = MqttEndpoint.from_url(url)
    topics = Topics(prefix)
    count = len(payloads)
    subscriber = subprocess.Popen(
        [
            *("mosquitto_sub", *_auth(endpoint), "-q", "1", "-C", str(count)),
            *("-i", "bench-ceiling-sub", "-t", topics.device("+", "fix")),
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(SUBSCRIBED_WAIT_S)  # subscribed before the first publish (nothing is retained)
    pubs = [
        subprocess.Popen(
            [
                *("mosquitto_pub", *_auth(endpoint), "-q", "1", "-M", str(PUB_INFLIGHT), "-l"),
                *("-i", f"bench-ceiling-pub-{p}", "-t", topics.device(f"ceiling-{p}", "fix")),
            ],
            stdin=subprocess.PIPE,
        )
        for p in range(publishers)
    ]
    feeds = [
        threading.Thread(target=_feed, args=(pub, b"\n".join(payloads[p::publishers]) + b"\n"))
        for p, pub in enumerate(pubs)
    ]
    started = time.monotonic()
    for feed in feeds:
        feed.start()
    try:
        subscriber.wait(timeout=600)
        elapsed = time.monotonic() - started
    finally:
        for feed, pub in zip(feeds, pubs, strict=True):
            feed.join()
            pub.stdin.close()  # type: ignore[union-attr]  # opened with stdin=PIPE
            pub.wait(timeout=60)
        if subscriber.poll() is None:
            subscriber.kill()
    return count / elapsed


def _feed(publisher: subprocess.Popen[bytes], lines: bytes) -> None:
    """Write a publisher's lines; its stdin stays open (see the module's note)."""
    publisher.stdin.write(lines)  # type: ignore[union-attr]  # opened with stdin=PIPE
    publisher.stdin.flush()  # type: ignore[union-attr]  # as above
