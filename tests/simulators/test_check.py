"""`--check`: notices mapped to scenario time, matched to expectations; nabij's timers scaled."""

from __future__ import annotations

import pytest

from nabij.config import Settings
from nabij.contract import Notice, QueueName
from simulators.check import evaluate, to_scenario_s
from simulators.scenario import load_scenario, parse_scenario
from simulators.timescale import scaled_settings, settings_toml, timescale_problems

WALL_START = 1_780_000_000_000

SCENARIO = """
name = "c"
duration_s = 1000
[[order]]
id = "ORD-C"
offender_device = "ank-c"
victim_devices = ["vic-c"]
alarm_m = 500
[[device]]
id = "ank-c"
role = "offender"
route = [{ lat = 52.4, lon = 4.9 }]
[[device]]
id = "vic-c"
role = "victim"
route = [{ lat = 52.37, lon = 4.89 }]
[[expect]]
kind = "proximity_alarm"
event = "opened"
after_s = 100
before_s = 200
at_most = 1
[[expect]]
kind = "proximity_alarm"
event = "cleared"
at_most = 1
[[expect]]
kind = "proximity_alarm"
event = "escalated"
queue = "police"
after_s = 150
"""


def notice(event: str, scenario_s: float, *, speed: float, order: str = "ORD-C") -> Notice:
    at = WALL_START + round(scenario_s * 1000 / speed)
    return Notice(
        notice_id=f"n-{event}-{scenario_s}",
        alarm_id="AL-1",
        event=event,  # type: ignore[arg-type]  # a NoticeEvent literal
        kind="proximity_alarm",
        priority=1,
        order_id=order,
        offender_device="ank-c",
        level=1,
        at=at,
        reason="test",
    )


def test_server_time_maps_to_scenario_time_by_the_speed() -> None:
    """At x50, one wall second after the start is 50 scenario seconds."""
    assert to_scenario_s(WALL_START + 1000, WALL_START, 50.0) == 50.0
    assert to_scenario_s(WALL_START, WALL_START, 50.0) == 0.0


def test_expectations_count_notices_in_their_windows_once_per_alarm_step() -> None:
    """A cleared notice sent to two queues counts once when no queue is named; windows end at
    the scenario's end; other orders' notices are ignored."""
    speed = 20.0
    seen: list[tuple[QueueName, Notice]] = [
        ("probation", notice("opened", 150, speed=speed)),
        ("probation", notice("opened", 160, speed=speed, order="ORD-OTHER")),
        ("police", notice("escalated", 210, speed=speed)),
        ("probation", notice("cleared", 800, speed=speed)),
        ("police", notice("cleared", 800, speed=speed)),
        ("probation", notice("cleared", 1200, speed=speed)),  # after the end
    ]
    result = evaluate(parse_scenario(SCENARIO), seen, WALL_START, speed)
    assert [len(o.matched) for o in result.outcomes] == [1, 1, 1]
    assert result.ok
    assert "3/3 expectations hold" in str(result)


def test_a_missing_or_extra_notice_fails_and_says_which() -> None:
    """Outside the window or too many: the outcome fails and the report names it."""
    speed = 20.0
    seen: list[tuple[QueueName, Notice]] = [
        ("probation", notice("opened", 250, speed=speed)),
        ("probation", notice("cleared", 500, speed=speed)),
        ("probation", notice("cleared", 600, speed=speed)),
    ]
    result = evaluate(parse_scenario(SCENARIO), seen, WALL_START, speed)
    assert [o.ok for o in result.outcomes] == [False, False, False]
    text = str(result)
    assert "FAILED" in text and "FAIL expect[0] proximity_alarm opened" in text
    assert "got 2 at 500, 600 s" in text


def test_timers_are_scaled_by_the_speed_and_a_wall_clock_config_is_refused() -> None:
    """Scaled settings satisfy the check (every server-time timer, presence and silence
    included); nabij's defaults at x30 are refused, by key."""
    scenario = load_scenario("approach")
    scaled = scaled_settings(Settings(), 30.0, scenario.duration_s)
    assert scaled.proximity.location_unknown_s == pytest.approx(6.0)
    presence = scaled.proximity
    assert (presence.offline_dwell_s, presence.online_dwell_s) == pytest.approx((2.0, 4.0))
    assert (presence.flap_window_s, presence.victim_silence_s) == pytest.approx((20.0, 10.0))
    assert scaled.policy("proximity_alarm").ack_timeout_s == pytest.approx(2.0)
    assert scaled.policy("proximity_alarm").escalate_to == ["police"]
    assert scaled.proximity.max_clock_ahead_s >= 29 * scenario.duration_s
    assert timescale_problems(scaled, 30.0, scenario) == []
    problems = timescale_problems(Settings(), 30.0, scenario)
    assert any(p.startswith("escalation.proximity_alarm.ack_timeout_s = 60") for p in problems)
    assert any(p.startswith("proximity.max_clock_ahead_s") for p in problems)
    assert any(p.startswith("proximity.victim_silence_s = 300") for p in problems)
    assert timescale_problems(Settings(), 1.0, scenario) == []


def test_written_settings_load_back_as_the_same_settings() -> None:
    """`--write-config` output is a valid nabij.toml holding exactly the scaled settings."""
    import tomllib

    scaled = scaled_settings(Settings(), 100.0, 1800.0)
    assert Settings.model_validate(tomllib.loads(settings_toml(scaled))) == scaled
