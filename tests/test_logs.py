"""Logging: JSON lines with a fixed shape, and no coordinates ever reaching the output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import structlog
from structlog.testing import capture_logs

from services.shell.logs import (
    REDACTED,
    SAMPLE_MAX_CHARS,
    LogAggregator,
    configure_logging,
    redact_positions,
)


class _Position(msgspec.Struct, frozen=True):
    lat: float
    lon: float


class _Notice(msgspec.Struct, frozen=True):
    alarm_id: str
    position: _Position | None
    where: _Position | None = None


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A buffer to configure logging into; global logging state is restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    try:
        yield buffer
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        root.handlers[:] = handlers
        root.setLevel(level)


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line]


def _redact(**event: Any) -> dict[str, Any]:
    return dict(redact_positions(None, "info", dict(event)))


def test_coordinate_and_party_keys_are_redacted_whatever_their_value() -> None:
    """lat, lon, latitude, longitude, victim, offender, position (any case) lose their value."""
    out = _redact(
        event="fix",
        lat=52.1,
        lon=4.3,
        Latitude=52.1,
        longitude=4.3,
        victim="v-1",
        offender={"id": "o-1"},
        position=[52.1, 4.3],
        device_id="d-1",
        seq=7,
    )
    for key in ("lat", "lon", "Latitude", "longitude", "victim", "offender", "position"):
        assert out[key] == REDACTED, key
    assert (out["event"], out["device_id"], out["seq"]) == ("fix", "d-1", 7)


def test_nested_mapping_with_coordinates_is_redacted_whole() -> None:
    """A dict holding lat/lon at any depth, or in a list, is replaced; its siblings stay."""
    out = _redact(
        event="state",
        last={"lat": 1.0, "lon": 2.0, "acc": 5},
        pair={"order": "o1", "fixes": [{"latitude": 1.0}, {"seq": 3}], "inside": True},
    )
    assert out["last"] == REDACTED
    assert out["pair"] == {"order": "o1", "fixes": [REDACTED, {"seq": 3}], "inside": True}


def test_structs_with_coordinates_are_redacted_before_repr() -> None:
    """Typed objects (msgspec Structs) never reach the renderer's repr() with their fields:
    a position object goes whole, a notice keeps its other fields."""
    out = _redact(
        event="notice",
        fix=_Position(52.1, 4.3),
        notice=_Notice(alarm_id="a1", position=None, where=_Position(1.0, 2.0)),
    )
    assert out["fix"] == REDACTED
    assert out["notice"] == {"alarm_id": "a1", "position": REDACTED, "where": REDACTED}


def test_output_is_one_json_object_per_line_with_the_fixed_keys(stream: io.StringIO) -> None:
    """Each event is a JSON line with ISO UTC timestamp, level, event, service and context."""
    configure_logging("info", "proximity", stream=stream)
    structlog.contextvars.bind_contextvars(batch=12)
    log = structlog.get_logger("test").bind(device_id="d-1")
    log.info("fix accepted", seq=4)
    log.warning("fix rejected", reason="schema")

    first, second = _lines(stream)
    assert first["event"] == "fix accepted"
    assert first["level"] == "info"
    assert first["service"] == "proximity"
    assert (first["device_id"], first["seq"], first["batch"]) == ("d-1", 4, 12)
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert (second["level"], second["reason"]) == ("warning", "schema")


def test_coordinates_never_reach_the_output(stream: io.StringIO) -> None:
    """End to end through configure_logging: no coordinate value appears in the text."""
    configure_logging("debug", "proximity", stream=stream)
    log = structlog.get_logger("test")
    log.info("fix", lat=52.123456, lon=4.654321, fix=_Position(52.123456, 4.654321))
    log.info("pair", state={"victim": {"lat": 52.123456, "lon": 4.654321}})

    text = stream.getvalue()
    assert "52.123456" not in text and "4.654321" not in text
    assert _lines(stream)[0]["lat"] == REDACTED


def test_level_filters_structlog_events(stream: io.StringIO) -> None:
    """Below the configured level nothing is written."""
    configure_logging("warning", "gateway", stream=stream)
    log = structlog.get_logger("test")
    log.info("quiet")
    log.error("loud")
    assert [line["event"] for line in _lines(stream)] == ["loud"]


def test_library_stdlib_logs_render_as_json_from_warning_up(stream: io.StringIO) -> None:
    """paho/amqtt stdlib records go through the same JSON renderer, at WARNING and above, and
    are redacted as well."""
    configure_logging("debug", "proximity", stream=stream)
    paho_log = logging.getLogger("paho.mqtt.client")
    paho_log.info("chatty")
    paho_log.warning("connection lost", extra={"lat": 52.123456})

    (line,) = _lines(stream)
    assert line["event"] == "connection lost"
    assert (line["level"], line["service"], line["lat"]) == ("warning", "proximity", REDACTED)
    assert "timestamp" in line


def test_configuring_twice_does_not_duplicate_lines(stream: io.StringIO) -> None:
    """A second configure_logging replaces its handler instead of adding another."""
    configure_logging("info", "proximity", stream=stream)
    configure_logging("info", "proximity", stream=stream)
    logging.getLogger("amqtt").error("boom")
    assert len(_lines(stream)) == 1


def test_capture_logs_sees_events_after_configuration(stream: io.StringIO) -> None:
    """Loggers are not cached, so structlog.testing.capture_logs works in tests of services."""
    configure_logging("info", "proximity", stream=stream)
    log = structlog.get_logger("module")
    log.info("before")
    with capture_logs() as captured:
        log.info("signal emitted", kind="proximity_alarm")
    assert captured == [{"event": "signal emitted", "kind": "proximity_alarm", "log_level": "info"}]


def test_unknown_level_is_an_error() -> None:
    """A misspelt level fails loudly instead of logging everything or nothing."""
    with pytest.raises(ValueError, match="verbose"):
        configure_logging("verbose", "proximity")


class _Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ten_thousand_rejections_give_a_handful_of_lines_with_the_right_counts() -> None:
    """10,000 rejections of two reasons over 25 s: each reason's first is logged at once, then
    one summary per reason and 10 s interval carrying the count and a sample; the counts add up
    to exactly what was recorded."""
    clock = _Clock()
    aggregator = LogAggregator(structlog.get_logger(), "rejected", interval_s=10.0, clock=clock)
    recorded = {"invalid_json": 0, "schema": 0}
    with capture_logs() as lines:
        for n in range(10_000):
            clock.now = 1000.0 + n * 0.0025  # 25 s in all
            reason = "schema" if n % 4 == 0 else "invalid_json"
            recorded[reason] += 1
            aggregator.record(reason, detail=f"junk {n}", topic="nabij/v1/devices/ank-1/fix")
            aggregator.flush()
        clock.now += 10.0
        aggregator.flush()

    firsts = [line for line in lines if line["event"] == "rejected"]
    summaries = [line for line in lines if line["event"] == "rejected_summary"]
    assert [(line["reason"], line["detail"]) for line in firsts] == [
        ("schema", "junk 0"),
        ("invalid_json", "junk 1"),
    ]
    assert len(summaries) == 6  # per reason: 0-10 s, 10-20 s, 20-25 s
    for reason, total in recorded.items():
        counted = sum(line["count"] for line in summaries if line["reason"] == reason)
        assert counted + 1 == total
    assert all(line["log_level"] == "warning" for line in lines)
    assert all(line["topic"] == "nabij/v1/devices/ank-1/fix" for line in summaries)
    assert {line["detail"] for line in summaries} <= {f"junk {n}" for n in range(10_000)}


def test_a_single_rejection_is_logged_at_once_and_a_quiet_reason_starts_over() -> None:
    """One bad message is one line, written at once, with no summary after it; a reason quiet
    for a whole interval is logged at once again on its next occurrence."""
    clock = _Clock()
    aggregator = LogAggregator(structlog.get_logger(), "rejected", interval_s=10.0, clock=clock)
    with capture_logs() as lines:
        aggregator.record("schema", detail="first")
        clock.now += 30.0
        aggregator.flush()
        aggregator.record("schema", detail="much later")
        aggregator.flush(final=True)
    assert [(line["event"], line["detail"]) for line in lines] == [
        ("rejected", "first"),
        ("rejected", "much later"),
    ]


def test_long_sample_values_are_cut() -> None:
    """A junk topic or detail of any length reaches the log cut to SAMPLE_MAX_CHARS."""
    aggregator = LogAggregator(structlog.get_logger(), "rejected", clock=_Clock())
    with capture_logs() as lines:
        aggregator.record("unknown_device", topic="t" * 100_000, device_id="d" * 10)
    assert len(lines[0]["topic"]) == SAMPLE_MAX_CHARS
    assert lines[0]["device_id"] == "d" * 10


def test_a_sample_cannot_overwrite_the_lines_own_fields() -> None:
    """A sample field named like the line's own (`reason`, `count`) neither breaks the call nor
    replaces the aggregator's value."""
    clock = _Clock()
    aggregator = LogAggregator(structlog.get_logger(), "dropped", interval_s=10.0, clock=clock)
    with capture_logs() as lines:
        for _ in range(3):
            aggregator.record("redis_oom", reason="sample's", count=99)
        clock.now += 10.0
        aggregator.flush()
    assert [(line["reason"], line["count"]) for line in lines] == [
        ("redis_oom", 99),
        ("redis_oom", 2),
    ]
