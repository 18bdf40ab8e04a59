"""Ingest: every kind of bad uplink is rejected with a reason, and good data is never lost."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nabij.contract import DeviceEvent, DeviceStatus, Fix, Topics
from services.proximity.core.ingest import Parsed, StatusUpdate, parse_uplink
from tests.proximity import OFFENDER, T0

TOPICS = Topics("nabij/v1")
AHEAD_MS = 300_000
FIX_TOPIC = TOPICS.device(OFFENDER, "fix")
EVENT_TOPIC = TOPICS.device(OFFENDER, "event")
STATUS_TOPIC = TOPICS.device(OFFENDER, "status")
SECRET_LAT = 52.123456
SECRET_LON = 4.654321


def fix_obj(seq: int = 1, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "device_id": OFFENDER,
        "seq": seq,
        "ts": T0,
        "lat": SECRET_LAT,
        "lon": SECRET_LON,
        "acc": 8.0,
    }
    body.update(changes)
    return body


def parse(topic: str, payload: bytes | str | Any, now_ms: int = T0) -> Parsed:
    if isinstance(payload, str):
        payload = payload.encode()
    elif not isinstance(payload, bytes):
        payload = json.dumps(payload).encode()
    return parse_uplink(TOPICS, topic, payload, now_ms, {OFFENDER}.__contains__)


def only_rejection(parsed: Parsed) -> str:
    assert parsed.uplinks == []
    assert len(parsed.rejections) == 1
    rejection = parsed.rejections[0]
    assert "52.12" not in rejection.detail and "4.65" not in rejection.detail
    assert rejection.detail.endswith(".")
    return rejection.reason


def test_a_single_fix_is_decoded() -> None:
    """A fix object on the fix topic becomes one Fix."""
    parsed = parse(FIX_TOPIC, fix_obj())
    assert parsed.rejections == []
    assert parsed.uplinks == [Fix(OFFENDER, 1, T0, SECRET_LAT, SECRET_LON, 8.0)]


def test_an_event_and_a_status_are_decoded() -> None:
    """The event topic gives a DeviceEvent; the status topic a StatusUpdate named by topic."""
    event = parse(EVENT_TOPIC, {"device_id": OFFENDER, "seq": 3, "ts": T0, "type": "power_off"})
    assert event.uplinks == [DeviceEvent(OFFENDER, 3, T0, "power_off")]
    status = parse(STATUS_TOPIC, {"online": False})
    assert status.uplinks == [StatusUpdate(OFFENDER, DeviceStatus(online=False))]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        ("", "invalid_json"),
        ({k: v for k, v in fix_obj().items() if k != "acc"}, "schema"),
        (fix_obj(lat=90.5), "schema"),
        (fix_obj(lon=-180.01), "schema"),
        (fix_obj(seq=-1), "schema"),
        (fix_obj(lat="52.1"), "schema"),
        (fix_obj(ts=1), "schema"),
        (json.dumps(fix_obj()).replace(str(SECRET_LAT), "NaN"), "invalid_json"),
        (json.dumps(fix_obj()).replace(str(SECRET_LAT), "Infinity"), "invalid_json"),
        (json.dumps(fix_obj()).replace(str(SECRET_LAT), "-Infinity"), "invalid_json"),
        (json.dumps(fix_obj()).replace(str(SECRET_LAT), "1e999"), "schema"),
        ("42", "schema"),
        (fix_obj(device_id="ank-0002"), "device_mismatch"),
    ],
    ids=[
        "invalid_json",
        "not_utf8",
        "empty",
        "missing_field",
        "lat_out_of_range",
        "lon_out_of_range",
        "negative_seq",
        "lat_as_string",
        "ts_before_2000",
        "nan",
        "infinity",
        "minus_infinity",
        "overflow_to_infinity",
        "not_an_object",
        "device_mismatch",
    ],
)
def test_bad_fix_payloads_are_rejected_with_a_reason(payload: Any, reason: str) -> None:
    """Each kind of bad fix is rejected alone, with its machine reason and a detail sentence that
    never repeats the coordinates."""
    assert only_rejection(parse(FIX_TOPIC, payload)) == reason


@pytest.mark.parametrize("ahead_ms", [AHEAD_MS, 30 * 86_400_000, -30 * 86_400_000])
def test_a_fix_is_taken_whatever_the_device_clock_says(ahead_ms: int) -> None:
    """Ingest does not judge device time: a clock minutes or days off still delivers its
    positions (nabij places them on its own clock; a clock far off is a device_fault)."""
    parsed = parse(FIX_TOPIC, fix_obj(ts=T0 + ahead_ms))
    assert parsed.rejections == [] and len(parsed.uplinks) == 1


def test_unknown_device_is_rejected_before_decoding() -> None:
    """A device in no order is rejected as unknown_device, whatever it sends."""
    topic = TOPICS.device("stranger-1", "fix")
    parsed = parse(topic, fix_obj(device_id="stranger-1"))
    assert only_rejection(parsed) == "unknown_device"
    assert parsed.rejections[0].device_id == "stranger-1"


@pytest.mark.parametrize(
    "topic",
    [
        TOPICS.device(OFFENDER, "cmd"),
        "nabij/v1/devices/ank-0001/fix/extra",
        "other/v1/devices/ank-0001/fix",
        "nabij/v1/devices/ank-0001/location",
    ],
)
def test_unknown_topics_are_rejected(topic: str) -> None:
    """Commands, deeper paths, foreign prefixes and unknown kinds are not uplinks."""
    assert only_rejection(parse(topic, fix_obj())) == "unknown_topic"


def test_event_checks_match_fix_checks() -> None:
    """Events are rejected for bad JSON, a bad type or a device mismatch, never for their clock."""
    base = {"device_id": OFFENDER, "seq": 3, "ts": T0, "type": "strap_tamper"}
    assert only_rejection(parse(EVENT_TOPIC, "nope")) == "invalid_json"
    assert only_rejection(parse(EVENT_TOPIC, {**base, "type": "explode"})) == "schema"
    assert only_rejection(parse(EVENT_TOPIC, {**base, "device_id": "x"})) == "device_mismatch"
    ahead = {**base, "type": "battery_low", "ts": T0 + AHEAD_MS + 1}
    assert parse(EVENT_TOPIC, ahead).rejections == []


@pytest.mark.parametrize("kind", ["aware_button", "strap_tamper"])
def test_safety_events_are_taken_even_with_a_clock_far_ahead(kind: str) -> None:
    """A panic press or a cut strap is never lost to a wrong device clock."""
    press = {"device_id": OFFENDER, "seq": 3, "ts": T0 + 10 * AHEAD_MS, "type": kind}
    parsed = parse(EVENT_TOPIC, press)
    assert parsed.rejections == [] and len(parsed.uplinks) == 1


def test_status_rejects_bad_payloads() -> None:
    """A status payload must be {"online": bool}."""
    assert only_rejection(parse(STATUS_TOPIC, {"online": "yes"})) == "schema"
    assert only_rejection(parse(STATUS_TOPIC, '{"online": tru')) == "invalid_json"


def test_backlog_array_keeps_the_good_fixes_sorted_by_seq() -> None:
    """In a backlog array one bad item is rejected alone; the good ones are kept, sorted by seq."""
    items = [
        fix_obj(seq=7, ts=T0 - 7_000),
        fix_obj(seq=5, ts=T0 - 9_000),
        fix_obj(seq=6, lat=123.0),
        fix_obj(seq=8, device_id="ank-0002"),
        fix_obj(seq=4, ts=T0 - 10_000),
    ]
    parsed = parse(FIX_TOPIC, items)
    assert [fix.seq for fix in parsed.uplinks if isinstance(fix, Fix)] == [4, 5, 7]
    assert sorted(r.reason for r in parsed.rejections) == ["device_mismatch", "schema"]
    schema = next(r for r in parsed.rejections if r.reason == "schema")
    assert schema.detail.startswith("Item 2: ") and "123" not in schema.detail
    assert "`$.lat`" in schema.detail


def test_backlog_array_of_exactly_the_maximum_is_taken() -> None:
    """1000 fixes in one array is allowed."""
    parsed = parse(FIX_TOPIC, [fix_obj(seq=i) for i in range(1000)])
    assert len(parsed.uplinks) == 1000 and parsed.rejections == []


def test_backlog_array_over_the_maximum_is_rejected_whole() -> None:
    """More than 1000 fixes in one array is one batch_too_large rejection, nothing taken."""
    assert only_rejection(parse(FIX_TOPIC, [fix_obj(seq=i) for i in range(1001)])) == (
        "batch_too_large"
    )


def test_empty_backlog_array_is_rejected() -> None:
    """An empty array is an empty_batch rejection."""
    assert only_rejection(parse(FIX_TOPIC, [])) == "empty_batch"
