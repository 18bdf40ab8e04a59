"""Intake: what each connection's reads become (queued, refused, left to the other lane)."""

from __future__ import annotations

from collections.abc import Callable

from nabij.contract import DeviceEvent, Fix, Topics, encode
from services.proximity.core.lanes import LaneLimits
from services.proximity.intake import Intake
from services.shell.mqtt_packets import Publish

TOPICS = Topics("nabij/v1")
KNOWN = {"ank-1", "vic-1"}
T0 = 1_790_000_000_000


def intake(
    limits: LaneLimits | None = None, known: Callable[[str], bool] = KNOWN.__contains__
) -> Intake:
    limits = limits or LaneLimits(device_max=100, lane_max=1000, lane_max_bytes=10**6)
    opened = Intake(
        TOPICS,
        known,
        lambda _device: False,
        limits,
        lambda: T0,
        report_every_ms=10_000,
    )
    opened.open()
    return opened


def fix(device: str, seq: int, mid: int) -> Publish:
    payload = encode(Fix(device, seq, T0, 52.37, 4.90, 5.0))
    return Publish(TOPICS.device(device, "fix"), payload, 1, mid)


def event(device: str, type_: str, mid: int, payload_device: str | None = None) -> Publish:
    payload = encode(DeviceEvent(payload_device or device, 7, T0, type_))  # type: ignore[arg-type]  # type_ is one of the event types
    return Publish(TOPICS.device(device, "event"), payload, 1, mid)


def test_the_bulk_lane_queues_known_devices_and_refuses_the_rest_in_bursts() -> None:
    """Uplinks of devices in an order are queued in arrival order; a device in no order and a
    topic that is no device uplink are acknowledged at once and become one dead letter per
    reason, with the count and the first message's topic and payload."""
    lanes = intake()
    junk = Publish("nabij/v1/other/thing", b"junk", 1, 5)
    messages = [fix("ank-1", 1, 1), fix("stranger", 1, 2), fix("stranger", 2, 3), junk]
    messages.append(event("vic-1", "battery_low", 4))
    delivery = lanes.bulk.deliver(1, messages, True, 0)
    assert delivery.rest == [] and [m.mid for m in delivery.ack_now] == [2, 3, 5]
    assert [(r.mid, r.connection) for r in lanes.drain(0, 10)] == [(1, 1), (4, 1)]
    letters = {rejection.reason: (item, rejection) for item, rejection in lanes.letters(T0 + 1000)}
    assert set(letters) == {"unknown_device", "unknown_topic"}
    item, rejection = letters["unknown_device"]
    assert item.topic == TOPICS.device("stranger", "fix") and item.payload == messages[1].payload
    assert rejection.detail.startswith("2 message(s) refused at intake")
    assert item.qos == 0  # a letter is acknowledged by nobody


def test_the_fast_lane_keeps_only_safety_events_of_known_devices() -> None:
    """On the fast connection a press or a tamper of a known device (whose payload names the
    topic's device) is queued; any other event, junk, and unknown devices are acknowledged at
    once and left to their copy on the bulk connection: not refused, not dead-lettered."""
    lanes = intake()
    messages = [
        event("vic-1", "aware_button", 1),
        event("vic-1", "battery_low", 2),
        Publish(TOPICS.device("vic-1", "event"), b"\x00junk", 1, 3),
        event("stranger", "aware_button", 4),
        event("vic-1", "aware_button", 5, payload_device="ank-1"),
        event("ank-1", "strap_tamper", 6),
    ]
    delivery = lanes.fast.deliver(2, messages, True, 0)
    assert [m.mid for m in delivery.ack_now] == [2, 3, 4, 5]
    assert [r.mid for r in lanes.drain(0, 10)] == [1, 6]
    assert lanes.letters(T0 + 60_000, final=True) == []


def test_a_batch_takes_the_fast_lane_first_then_the_bulk_lane_round_robin() -> None:
    """Presses queued after a device's backlog still come first; the bulk lane gives each
    device one turn per round, so the flooded device's messages do not come before others'."""
    lanes = intake()
    lanes.bulk.deliver(1, [fix("ank-1", n, n) for n in range(1, 6)], True, 0)
    lanes.bulk.deliver(1, [fix("vic-1", 1, 10)], True, 0)
    lanes.fast.deliver(2, [event("vic-1", "aware_button", 20)], True, 0)
    assert [r.mid for r in lanes.drain(0, 4)] == [20, 1, 10, 2]
    assert [r.mid for r in lanes.drain(0, 10)] == [3, 4, 5]


def test_a_live_flood_is_refused_beyond_the_bound_and_a_full_lane_holds_the_reader() -> None:
    """Live, a device's messages beyond its bound are refused (acked, one `flood` letter);
    while catching up valid surplus is kept; when the lane itself is full the rest of the read
    is handed back, unacknowledged, to be offered again once a batch made room."""
    lanes = intake(LaneLimits(device_max=2, lane_max=4, lane_max_bytes=10**6))
    delivery = lanes.bulk.deliver(1, [fix("ank-1", n, n) for n in range(1, 5)], True, 0)
    assert [m.mid for m in delivery.ack_now] == [3, 4] and delivery.rest == []
    ((_, flood),) = lanes.letters(T0 + 1000)
    assert flood.reason == "flood" and flood.device_id == "ank-1"
    backlog = [fix("vic-1", n, 10 + n) for n in range(1, 5)]
    delivery = lanes.bulk.deliver(1, backlog, False, 0)
    assert delivery.ack_now == [] and [m.mid for m in delivery.rest] == [13, 14]
    assert len(lanes.drain(0, 3)) == 3
    delivery = lanes.bulk.deliver(1, delivery.rest, False, 0)
    assert delivery.ack_now == [] and delivery.rest == []
    assert [r.mid for r in lanes.drain(0, 10)] == [12, 13, 14]  # vic-1 in its order


def test_a_flooding_device_does_not_starve_another_devices_fixes() -> None:
    """A read of 5,000 valid-looking fixes of ank-1 with one fix of vic-1 at its very end: the
    flood beyond its bound is refused, and vic-1's fix is in the first batch, second in it."""
    lanes = intake()
    flood = [fix("ank-1", n, n % 60_000 + 1) for n in range(5000)]
    delivery = lanes.bulk.deliver(1, [*flood, fix("vic-1", 1, 65_000)], True, 0)
    assert len(delivery.ack_now) == 5000 - 100 and delivery.rest == []
    first = lanes.drain(0, 10)
    assert [r.topic for r in first[:3]] == [
        TOPICS.device("ank-1", "fix"),
        TOPICS.device("vic-1", "fix"),
        TOPICS.device("ank-1", "fix"),
    ]


def test_until_open_the_intake_holds_every_message_back_and_refuses_none() -> None:
    """Before the service holds its state (lease, adoption after a re-shard) the readers are
    subscribed but nothing is judged: every message comes back as `rest` (backpressure, the
    broker keeps it), none is acknowledged, refused or queued."""
    waiting = Intake(
        TOPICS,
        KNOWN.__contains__,
        lambda _device: False,
        LaneLimits(device_max=100, lane_max=1000, lane_max_bytes=10**6),
        lambda: T0,
        report_every_ms=10_000,
    )
    messages = [fix("ank-1", 1, 1), fix("stranger", 1, 2)]
    delivery = waiting.bulk.deliver(1, messages, True, 0)
    assert (delivery.rest, delivery.ack_now) == (messages, [])
    assert waiting.drain(0, 10) == [] and waiting.letters(T0, final=True) == []
    waiting.open()
    delivery = waiting.bulk.deliver(1, messages, True, 0)
    assert delivery.rest == [] and delivery.ack_now == [messages[1]]


def test_another_shards_device_is_acknowledged_and_never_reported() -> None:
    """A device another shard owns is left alone: acknowledged, not queued, no dead letter."""
    shard = Intake(
        TOPICS,
        KNOWN.__contains__,
        lambda device: device == "theirs",
        LaneLimits(device_max=100, lane_max=1000, lane_max_bytes=10**6),
        lambda: T0,
        report_every_ms=10_000,
    )
    shard.open()
    message = fix("theirs", 1, 1)
    assert shard.bulk.deliver(1, [message], True, 0).ack_now == [message]
    assert shard.drain(0, 10) == [] and shard.letters(T0, final=True) == []


def backlog(device: str, fixes: int, mid: int) -> Publish:
    """A device's backlog after a coverage gap: one JSON array of `fixes` fixes."""
    items = b",".join(
        encode(Fix(device, n + 1, T0 - n * 10_000, 52.37, 4.90, 5.0)) for n in range(fixes)
    )
    return Publish(TOPICS.device(device, "fix"), b"[" + items + b"]", 1, mid)


def test_a_press_waits_behind_one_backlog_at_most_not_behind_the_storm() -> None:
    """50 devices upload a 1,000-fix backlog each (a storm of 50,000 fixes, in a lane that
    holds it all); a batch takes one backlog, not all 50 (a batch is bounded by payload bytes,
    not only by messages). A press arriving then is the next batch's first message and is not
    followed by a backlog it would have to wait for: counted by position, at most 1,000 of the
    storm's 50,000 fixes are taken in before the press."""
    devices = [f"ank-s{i}" for i in range(50)]
    lanes = intake(
        LaneLimits(device_max=100, lane_max=20_000, lane_max_bytes=64 * 1024 * 1024),
        lambda d: d in KNOWN or d in devices,
    )
    storm = [backlog(d, 1000, mid) for mid, d in enumerate(devices, start=1)]
    delivery = lanes.bulk.deliver(1, storm, False, 0)
    assert delivery.ack_now == [] and delivery.rest == []  # all queued
    first = lanes.drain(0, 2000)
    assert [r.mid for r in first] == [1]
    lanes.fast.deliver(2, [event("vic-1", "aware_button", 999)], True, 0)
    second = lanes.drain(0, 2000)
    assert [r.mid for r in second] == [999]
    fixes_before_press = sum(r.payload.count(b'"seq"') for r in first)
    assert fixes_before_press == 1000
    rest = [[r.mid for r in batch] for batch in iter(lambda: lanes.drain(0, 2000), [])]
    assert rest == [[mid] for mid in range(2, 51)]  # the storm goes on, a backlog a batch


def test_the_lanes_stay_bounded_by_count_under_a_ten_times_burst() -> None:
    """A burst of ten times the lane's bound (1,000 messages of 500 devices, read 50 at a time)
    never has more than `lane_max` messages queued: the reader is handed the rest back
    (backpressure, nothing acknowledged), offers it again once a batch made room, and in the end
    every message was taken exactly once, each device's in order, none refused."""
    devices = [f"ank-b{i}" for i in range(500)]
    limits = LaneLimits(device_max=100, lane_max=100, lane_max_bytes=10**6)
    lanes = intake(limits, devices.__contains__)
    burst = [fix(devices[n % 500], n // 500 + 1, n + 1) for n in range(1000)]
    queued_most = queued = 0
    taken: list[int] = []
    for start in range(0, len(burst), 50):
        pending = burst[start : start + 50]
        while pending:
            delivery = lanes.bulk.deliver(1, pending, True, 0)
            assert delivery.ack_now == []  # nothing refused, nothing acknowledged early
            queued += len(pending) - len(delivery.rest)
            queued_most = max(queued_most, queued)
            pending = delivery.rest
            if pending:  # the service's thread makes room
                batch = lanes.drain(0, 30)
                queued -= len(batch)
                taken += [r.mid for r in batch]
    taken += [r.mid for batch in iter(lambda: lanes.drain(0, 30), []) for r in batch]
    assert queued_most == limits.lane_max
    assert sorted(taken) == [m.mid for m in burst]
    for device in devices[:5]:
        mids = [m for m in taken if (m - 1) % 500 == devices.index(device)]
        assert mids == sorted(mids)


def test_invented_topics_beyond_the_topic_cache_keep_no_device_out() -> None:
    """Topics a client invents fill the (bounded) topic cache and start it again: they are
    refused, and a known device's fix after them is still queued."""
    topics = Topics("nabij/v1", cached=10)
    lanes = Intake(topics, KNOWN.__contains__, lambda _device: False,
                   LaneLimits(device_max=100, lane_max=1000, lane_max_bytes=10**6), lambda: T0,
                   report_every_ms=10_000)  # fmt: skip
    lanes.open()
    junk = [Publish(TOPICS.device(f"x{n}", "fix"), b"{}", 1, n + 1) for n in range(50)]
    delivery = lanes.bulk.deliver(1, [*junk, fix("ank-1", 1, 99)], True, 0)
    assert len(delivery.ack_now) == 50
    assert len(topics._parsed) <= 10
    assert [r.mid for r in lanes.drain(0, 10)] == [99]
