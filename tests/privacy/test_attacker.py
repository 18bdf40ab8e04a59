"""PRIVACY, the acceptance test: an attacker holding everything the probation role can read does
not locate the victim closer than the band; the same attacker on the exact figures (the police
queue, or probation notices as they were) finds her within metres. The offender, from his own
track and his device's commands, cannot tell her positions within one grid cell apart; on
warnings judged on her exact position he could. See docs/privacy.md."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nabij.contract import AlarmSignal, Notice, QueueName, encode
from nabij.settings import PrivacySettings
from services.alarm_gateway.core.alarms import AlarmBook, distance_band, encode_record
from services.proximity.core.cells import METRES_PER_DEGREE, SnapGrid
from services.proximity.core.geo import distance_m
from services.replay.timeline import replay
from tests.privacy.attacker import Projection, Verdict, attack
from tests.roles import assert_probation_safe
from tests.scenarios.tracks import Scenario, load_scenario, offset

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
    return _miss_m(verdict, project(*readings.scenario.origin))  # she stands at the origin


def _miss_m(verdict: Verdict, truth: tuple[float, float]) -> float:
    """How far the attacker's better guess is from her."""
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


_STILL_AT_ORIGIN = "path = [[0, 0, 0]]"


def _offender_view(
    tmp_path: Path, victim_at: tuple[float, float], grid_m: float
) -> tuple[Scenario, list[Document]]:
    """The scenario with her standing `victim_at` (metres east, north of the origin), replayed
    with `offender_grid_m` = `grid_m`: everything the offender has, his own fixes and every
    command his device received (when, and what)."""
    text = SCENARIO.read_text(encoding="utf-8")
    assert _STILL_AT_ORIGIN in text
    moved = tmp_path / f"victim_{victim_at[0]:.0f}_{victim_at[1]:.0f}_{grid_m:.0f}.toml"
    moved.write_text(
        text.replace(_STILL_AT_ORIGIN, f"path = [[0, {victim_at[0]}, {victim_at[1]}]]")
    )
    scenario = load_scenario(moved)
    privacy = PrivacySettings(offender_grid_m=grid_m)
    settings = scenario.config.settings.model_copy(update={"privacy": privacy})
    config = dataclasses.replace(scenario.config, settings=settings)
    offender = config.orders[0].offender_device
    seen: list[Document] = []
    for record in scenario.records:
        if record.topic.endswith(f"/{offender}/fix"):
            fix = _json(record.payload)
            own = {
                "lat": fix["lat"],
                "lon": fix["lon"],
                "acc": fix["acc"],
                "ts": record.received_ms,
            }
            seen.append((record.received_ms, {"offender": own}))
    for line in replay(config, scenario.records, tail_s=TAIL_S).lines:
        if line.command is not None and line.device == offender:
            seen.append((line.at, _json(encode(line.command))))
    return scenario, seen


def _victim_fixes(scenario: Scenario) -> set[tuple[float, float]]:
    victim = scenario.config.orders[0].victim_devices[0]
    fixes = [_json(r.payload) for r in scenario.records if r.topic.endswith(f"/{victim}/fix")]
    return {(fix["lat"], fix["lon"]) for fix in fixes}


def _attack_error_m(
    scenario: Scenario, seen: list[Document], victim_at: tuple[float, float]
) -> float:
    lat, lon = scenario.origin
    project = Projection(round(lat, 2), round(lon, 2))
    return _miss_m(attack(seen, project, RINGS_M), project(*offset(scenario.origin, *victim_at)))


def _commands(seen: list[Document]) -> list[Document]:
    return [document for document in seen if "offender" not in document[1]]


def _opposite_corners(
    origin: tuple[float, float], grid: SnapGrid
) -> tuple[tuple[float, float], ...]:
    """Two points of her grid cell, 90% of the way from its centre to opposite corners, as
    metres east and north of the origin (a local flat frame: metres off over these 200 m)."""
    lat0, lon0 = origin
    lat_c, lon_c = grid.centre(lat0, lon0)
    north_c = (lat_c - lat0) * METRES_PER_DEGREE
    east_c = (lon_c - lon0) * METRES_PER_DEGREE * math.cos(math.radians(lat0))
    half = 0.9 * grid.cell_m / 2
    return (east_c - half, north_c - half), (east_c + half, north_c + half)


def test_the_offender_cannot_locate_her_closer_than_her_grid_cell(tmp_path: Path) -> None:
    """The offender knows his own track and every command his device gets. With her at two
    opposite corners of one grid cell (90% of the way out: 318 m apart for the default 250 m
    cell), he gets the very same commands at the very same times: nothing he can compute tells
    the two apart, so his best estimate is at least 159 m from her (half their distance) for
    one of them, whatever his method. The attacker of the probation test (rings known, not the
    grid) is 322 m from her at the origin (measured; one who knows the grid: 153 m)."""
    grid = SnapGrid(PrivacySettings().offender_grid_m)
    origin = load_scenario(SCENARIO).origin
    views = []
    for corner in _opposite_corners(origin, grid):
        scenario, seen = _offender_view(tmp_path, corner, grid.cell_m)
        (her,) = _victim_fixes(scenario)
        assert grid.centre(*her) == grid.centre(*origin)  # the same cell
        views.append((her, _commands(seen)))
    (first, commands), (second, other_commands) = views
    assert any(c[1]["type"] == "warn" and c[1]["level"] == "alarm" for c in commands)
    assert commands == other_commands
    apart_m = distance_m(*first, *second)
    assert apart_m > 0.9 * grid.cell_m * math.sqrt(2) * 0.99
    scenario, seen = _offender_view(tmp_path, (0.0, 0.0), grid.cell_m)
    assert _attack_error_m(scenario, seen, (0.0, 0.0)) > grid.cell_m


def test_the_same_attacker_finds_her_from_warnings_on_her_exact_position(tmp_path: Path) -> None:
    """The test can fail: with a 1 m grid (warnings judged, in effect, on her exact position, as
    they were), the same attacker on his own track and warnings locates her within 60 m
    (measured 31 m: two approaches from different sides), and her two corners give him
    different commands."""
    scenario, seen = _offender_view(tmp_path, (0.0, 0.0), 1.0)
    assert _attack_error_m(scenario, seen, (0.0, 0.0)) < 60
    corners = _opposite_corners(scenario.origin, SnapGrid(PrivacySettings().offender_grid_m))
    commands = [_commands(_offender_view(tmp_path, corner, 1.0)[1]) for corner in corners]
    assert commands[0] != commands[1]
