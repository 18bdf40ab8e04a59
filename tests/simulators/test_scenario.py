"""Scenario files: the packaged ones load and do what they say; bad files fail clearly."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from nabij.config import OrdersFile
from simulators import geo
from simulators.scenario import (
    Scenario,
    ScenarioError,
    list_scenarios,
    load_scenario,
    parse_scenario,
)

MINIMAL = """
name = "mini"
duration_s = 60
[[device]]
id = "ank-1"
role = "offender"
route = [{ lat = 52.0, lon = 5.0 }]
[[device]]
id = "vic-1"
role = "victim"
route = [{ lat = 52.1, lon = 5.0 }]
"""


def _distances(scenario: Scenario, step_s: float = 5.0) -> list[tuple[float, float]]:
    """(t, true offender-victim distance) over the whole scenario, for its first order."""
    order = scenario.order[0]
    offender = scenario.device_by_id(order.offender_device).plan()
    victim = scenario.device_by_id(order.victim_devices[0]).plan()
    out = []
    t = 0.0
    while t <= scenario.duration_s:
        a, b = offender.at(t), victim.at(t)
        out.append((t, geo.distance_m(a.lat, a.lon, b.lat, b.lon)))
        t += step_s
    return out


def test_packaged_scenarios_are_listed_and_load() -> None:
    """The three scenarios ship with the package, and each is valid."""
    names = list_scenarios()
    assert {"approach", "aware", "wobble"} <= set(names)
    for name in names:
        scenario = load_scenario(name)
        assert scenario.name == name
        assert scenario.order and scenario.expect


def test_scenario_orders_are_valid_nabij_orders() -> None:
    """`orders_toml()` is an orders.toml that nabij's own config loader accepts."""
    for name in list_scenarios():
        scenario = load_scenario(name)
        orders = OrdersFile.model_validate(tomllib.loads(scenario.orders_toml()))
        assert list(orders.order) == list(scenario.order)


def test_approach_comes_from_3_km_to_250_m_lingers_and_leaves() -> None:
    """approach: starts ~3 km out, spends minutes at ~250 m, ends beyond 2 km."""
    distances = _distances(load_scenario("approach"))
    assert distances[0][1] == pytest.approx(3000, abs=50)
    close = [t for t, d in distances if d < 260]
    assert close and max(close) - min(close) >= 300
    assert distances[-1][1] > 2000


def test_aware_keeps_the_pair_apart_and_presses_the_button() -> None:
    """aware: the pair stays more than 5 km apart; the victim presses aware_button."""
    scenario = load_scenario("aware")
    assert min(d for _, d in _distances(scenario)) > 5000
    assert [(e.device, e.type) for e in scenario.event] == [("vic-sim-02", "aware_button")]


def test_wobble_stands_at_the_alarm_ring_for_ten_minutes_with_small_noise() -> None:
    """wobble: >= 10 min within a few metres of alarm_m; noise well below the 50 m margin."""
    scenario = load_scenario("wobble")
    alarm_m = scenario.order[0].alarm_m
    at_ring = [t for t, d in _distances(scenario) if abs(d - alarm_m) < 10]
    assert max(at_ring) - min(at_ring) >= 600
    for device in scenario.device:
        assert 0 < device.noise.sigma_m * 3 < 50


def test_relative_moves_resolve_from_the_previous_waypoint() -> None:
    """A waypoint given as bearing + distance lies that far from the one before."""
    text = MINIMAL.replace(
        "route = [{ lat = 52.0, lon = 5.0 }]",
        "route = [{ lat = 52.0, lon = 5.0, speed_mps = 2 },"
        " { bearing_deg = 90, distance_m = 400 }]",
    )
    points = parse_scenario(text).device_by_id("ank-1").waypoints()
    bearing, distance = geo.inverse(points[0].lat, points[0].lon, points[1].lat, points[1].lon)
    assert distance == pytest.approx(400.0, abs=1e-6)
    assert bearing == pytest.approx(90.0, abs=1e-6)


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    """Unknown keys, bad values and broken references all show up, each with its key path."""
    text = (
        MINIMAL.replace('role = "victim"', 'role = "victim"\ncolour = "red"')
        + """
[[order]]
id = "O-1"
offender_device = "ank-1"
victim_devices = ["vic-9"]
alarm_m = 500
[[event]]
at_s = 10
device = "ank-1"
type = "aware_button"
[[expect]]
kind = "proximity_alarm"
event = "opened"
after_s = 50
before_s = 10
"""
    )
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "bad.toml")
    assert caught.value.problems == ["device[1].colour: unknown key"]
    fixed = text.replace('colour = "red"\n', "")
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(fixed, "bad.toml")
    message = str(caught.value)
    assert "bad.toml: order[0].victim_devices[0]: 'vic-9' is not a device" in message
    assert "event[0].type: 'ank-1' is an ankle monitor, it cannot raise 'aware_button'" in message
    assert "expect[0].before_s: earlier than after_s" in message


def test_route_errors_name_the_device_and_waypoint() -> None:
    """A leg without a speed, or a relative first point, is caught at load time."""
    text = MINIMAL.replace(
        "route = [{ lat = 52.0, lon = 5.0 }]",
        "route = [{ bearing_deg = 0, distance_m = 5 }, { lat = 52.0, lon = 5.0, dwell_s = -1 }]",
    )
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text)
    assert any(p.startswith("device[0].route[1].dwell_s") for p in caught.value.problems)
    no_speed = MINIMAL.replace(
        "route = [{ lat = 52.0, lon = 5.0 }]",
        "route = [{ lat = 52.0, lon = 5.0 }, { lat = 52.01, lon = 5.0 }]",
    )
    with pytest.raises(ScenarioError, match=r"device\[0\]: route\[0\]: no speed_mps"):
        parse_scenario(no_speed)


def test_unknown_names_and_missing_files_are_clear(tmp_path: Path) -> None:
    """A wrong scenario name lists the packaged ones; a missing path says so."""
    with pytest.raises(ScenarioError, match=r"available: .*approach"):
        load_scenario("nope")
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(str(tmp_path / "missing.toml"))
    with pytest.raises(ScenarioError, match="not valid TOML"):
        parse_scenario("name = ")


def test_a_scenario_file_by_path_loads(tmp_path: Path) -> None:
    """Testers can keep scenario files of their own and load them by path."""
    path = tmp_path / "mine.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    scenario = load_scenario(str(path))
    assert [d.id for d in scenario.device] == ["ank-1", "vic-1"]
    assert scenario.device[0].interval_s == 60 and scenario.seed == 0
