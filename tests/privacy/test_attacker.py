"""PRIVACY, the acceptance test: an attacker holding everything the probation role can read does
not locate the victim closer than the band; the same attacker on the exact figures (the police
queue, or probation notices as they were) finds her within metres. See docs/privacy.md."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nabij.contract import AlarmSignal, Notice, QueueName, encode
from services.alarm_gateway.core.alarms import AlarmBook, distance_band, encode_record
from services.proximity.tracks import Scenario, load_scenario
from services.replay.timeline import replay
from tests.privacy.attacker import Projection, Verdict, attack
from tests.roles import assert_probation_safe

SCENARIO = Path(__file__).resolve().parent / "stalker_circles_victim.toml"
RINGS_M = {"alarm": 500.0, "pre_alert": 1000.0}  # the order's rings: the attacker knows them
TAIL_S = 300
Document = tuple[int, dict[str, Any]]


@dataclass(slots=True)
class Readings:
    """What each role could read over the scenario, as the attacker receives it."""

    scenario: Scenario
    probation: list[Document] = field(default_factory=list)
    police: list[Notice] = field(default_factory=list)
    commands: list[Document] = field(default_factory=list)
    records: list[Document] = field(default_factory=list)
    probation_notices: list[Notice] = field(default_factory=list)


def _json(blob: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(blob)
    return decoded


@pytest.fixture(scope="module")
def readings() -> Readings:
    """The scenario through the real proximity core (`replay`), its signals through a gateway
    book ticking every second as the service does, collecting every probation notice, every
    stored record (as `nabij alarms` and the resolved stream hold it) and every command."""
    scenario = load_scenario(SCENARIO)
    timeline = replay(scenario.config, scenario.records, tail_s=TAIL_S)
    out = Readings(scenario)
    offender = scenario.config.orders[0].offender_device
    signals: dict[int, list[AlarmSignal]] = {}
    for line in timeline.lines:
        if line.signal is not None:
            signals.setdefault(line.at, []).append(line.signal)
        if line.command is not None and line.device == offender:
            out.commands.append((line.at, _json(encode(line.command))))
    book = AlarmBook(scenario.config.settings)
    start, end = min(signals), max(signals) + TAIL_S * 1000
    for now in sorted({*signals, *range(start, end, 1000)}):
        decisions = [book.apply(s, now) for s in signals.get(now, [])]
        decisions += [book.fire_due(alarm_id, now) for alarm_id in book.due(now)]
        for decision in decisions:
            for record in (*decision.upserts, *decision.resolved):
                out.records.append((now, _json(encode_record(record))))
            for queue, notice in decision.notices:
                _keep(out, queue, notice)
    return out


def _keep(out: Readings, queue: QueueName, notice: Notice) -> None:
    if queue == "police":
        out.police.append(notice)
    else:
        out.probation_notices.append(notice)
        out.probation.append((notice.at, _json(encode(notice))))


def _error_m(readings: Readings, verdict: Verdict, project: Projection) -> float:
    truth = project(*readings.scenario.origin)  # the victim stands at the origin
    return min(
        (math.hypot(east - truth[0], north - truth[1]) for east, north in verdict.estimates),
        default=math.inf,
    )


def _projection(readings: Readings) -> Projection:
    lat, lon = readings.scenario.origin
    return Projection(round(lat, 2), round(lon, 2))  # the attacker's own frame, not her position


def _as_probation_was(notice: Notice) -> dict[str, Any]:
    """A police notice without the victim field: the probation notice before this change."""
    return _json(encode(msgspec.structs.replace(notice, victim=None)))


def _bands_with_exact_offender(notice: Notice) -> dict[str, Any]:
    """Bands instead of metres, but the offender's exact position kept: the design rejected."""
    band = None if notice.distance_m is None else distance_band(notice.distance_m, EDGES)
    bare = msgspec.structs.replace(
        notice, victim=None, distance_m=None, uncertainty_m=None, distance_band=band
    )
    return _json(encode(bare))


EDGES = [100.0, 250.0, 500.0, 1000.0, 2000.0]


def test_the_scenario_reaches_every_victim_relative_alarm(readings: Readings) -> None:
    """The approach really happens: both rings open, clear and return, she presses, his strap
    alarm opens far from her (probation sees where he is) and returns with his battery alarm
    while he is near her (probation does not); probation hears bands and police the metres."""
    kinds = [(n.kind, n.event) for n in readings.probation_notices]
    for kind in ("proximity_pre_alert", "proximity_alarm"):
        assert (kind, "opened") in kinds and (kind, "cleared") in kinds
        returned = [n for n in readings.probation_notices if n.kind == kind]
        assert any(n.reason.startswith("Condition returned") for n in returned)
    for kind in ("aware_button", "battery_low", "strap_tamper"):
        assert (kind, "opened") in kinds
    device_kinds = ("battery_low", "strap_tamper")
    device_alarms = [n for n in readings.probation_notices if n.kind in device_kinds]
    assert device_alarms[0].kind == "strap_tamper" and device_alarms[0].offender is not None
    assert any(n.kind == "battery_low" and n.offender is None for n in device_alarms)
    assert any(n.distance_band is not None for n in readings.probation_notices)
    assert sum(n.distance_m is not None for n in readings.police) >= 5
    for notice in readings.probation_notices:
        assert_probation_safe(notice)


def test_probation_cannot_locate_her_closer_than_the_band(readings: Readings) -> None:
    """Everything the probation role reads (its notices, the stored records, the offender's
    commands): the attacker finds no offender position while any alarm about her whereabouts is
    open, so no band (nor band crossing, nor warning) gets a centre. Its feasible region is still
    the whole 6 km search square (points 8 km apart) and its best guess (where he was seen, far
    from her) is further from her than the widest band she was in (500 m); measured 2.1 km."""
    project = _projection(readings)
    everything = readings.probation + readings.records + readings.commands
    verdict = attack(everything, project, RINGS_M)
    assert verdict.annuli == []
    assert verdict.feasible_diameter_m > 8000
    assert _error_m(readings, verdict, project) > 500


def test_the_same_attacker_finds_her_from_exact_distances(readings: Readings) -> None:
    """The test can fail: on the police queue, or on probation notices as they were before (the
    offender's position and the exact distance, no victim field), the same attacker locates
    her within 5 m (measured 2.3 m; the feasible region 22 m across)."""
    project = _projection(readings)
    old = [(n.at, _as_probation_was(n)) for n in readings.police]
    verdict = attack(old, project, RINGS_M)
    assert len(verdict.annuli) >= 5
    assert _error_m(readings, verdict, project) < 5


def test_bands_alone_are_not_enough_while_his_position_is_shown(readings: Readings) -> None:
    """Why the offender's position is withheld too: bands with his exact position (annuli from
    several sides, and the band crossings' timing) still narrow her down to well inside the
    band she was in (250 m wide); measured: 17 m, the feasible region 58 m across."""
    project = _projection(readings)
    banded = [(n.at, _bands_with_exact_offender(n)) for n in readings.police]
    verdict = attack(banded, project, RINGS_M)
    assert _error_m(readings, verdict, project) < 250


@pytest.mark.xfail(
    strict=True,
    reason="OPEN (docs/privacy.md, residual 1): ring warnings are decided on her exact position",
)
def test_the_offender_cannot_locate_her_from_his_own_track_and_warnings(readings: Readings) -> None:
    """The offender knows his own track, and each `warn` tells him he is inside a ring of her:
    every warning is a disk around where he was. Two approaches from different sides already
    put her within ~30 m (feasible region ~260 m across). Closing this needs the warnings
    decided on a coarsened position of hers in the proximity engine; until then this test
    fails on purpose (strict xfail: it turns red the day the leak is closed, to be unmarked)."""
    project = _projection(readings)
    own_track = []
    for record in readings.scenario.records:
        if record.topic.endswith("/ank-0001/fix"):
            fix = _json(record.payload)
            seen = {"lat": fix["lat"], "lon": fix["lon"], "acc": fix["acc"]}
            own_track.append((record.received_ms, {"offender": {**seen, "ts": record.received_ms}}))
    verdict = attack(own_track + readings.commands, project, RINGS_M)
    assert _error_m(readings, verdict, project) > 500
