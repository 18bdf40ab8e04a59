"""`--check`: notices mapped to scenario time, matched to expectations; nabij on the
scenario's clock."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nabij.config import DEFAULT_ESCALATION, Settings
from nabij.contract import Notice, QueueName
from simulators.check import evaluate, to_scenario_s
from simulators.scenario import load_scenario, parse_scenario
from simulators.timescale import scaled_settings, settings_toml, timescale_problems

START_MS = 1_780_000_000_000

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


def notice(
    event: str, scenario_s: float, *, order: str = "ORD-C", happened_s: float | None = None
) -> Notice:
    at = START_MS + round(scenario_s * 1000)
    happened_at = None if happened_s is None else START_MS + round(happened_s * 1000)
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
        happened_at=happened_at,
    )


def test_nabij_time_is_scenario_time_from_the_runs_start() -> None:
    """nabij runs on the scenario's clock: 50 s of it after the run's start are 50 s."""
    assert to_scenario_s(START_MS + 50_000, START_MS) == 50.0
    assert to_scenario_s(START_MS, START_MS) == 0.0


def test_expectations_count_notices_in_their_windows_once_per_alarm_step() -> None:
    """A cleared notice sent to two queues counts once when no queue is named; windows end at
    the scenario's end; other orders' notices are ignored."""
    speed = 20.0
    seen: list[tuple[QueueName, Notice]] = [
        ("probation", notice("opened", 150)),
        ("probation", notice("opened", 160, order="ORD-OTHER")),
        ("police", notice("escalated", 210)),
        ("probation", notice("cleared", 800)),
        ("police", notice("cleared", 800)),
        ("probation", notice("cleared", 1200)),  # after the end
    ]
    result = evaluate(parse_scenario(SCENARIO), seen, START_MS, speed)
    assert [len(o.matched) for o in result.outcomes] == [1, 1, 1]
    assert result.ok
    assert "3/3 expectations hold" in str(result)


def test_a_missing_or_extra_notice_fails_and_says_which() -> None:
    """Outside the window or too many: the outcome fails and the report names it."""
    speed = 20.0
    seen: list[tuple[QueueName, Notice]] = [
        ("probation", notice("opened", 250)),
        ("probation", notice("cleared", 500)),
        ("probation", notice("cleared", 600)),
    ]
    result = evaluate(parse_scenario(SCENARIO), seen, START_MS, speed)
    assert [o.ok for o in result.outcomes] == [False, False, False]
    text = str(result)
    assert "FAILED" in text and "FAIL expect[0] proximity_alarm opened" in text
    assert "got 2 at 500, 600 s" in text


def test_a_late_notice_matches_only_when_it_happened_in_the_window() -> None:
    """`happened_*`: a notice found late counts if its happened_at falls in the window; one
    without happened_at (found live) or from another time does not."""
    late = SCENARIO.replace(
        "after_s = 100\nbefore_s = 200\nat_most = 1",
        "after_s = 100\nbefore_s = 200\nat_most = 1\nhappened_after_s = 30\nhappened_before_s = 60",
    )
    scenario = parse_scenario(late)
    for happened_s, counted in ((45.0, 1), (None, 0), (80.0, 0)):
        seen: list[tuple[QueueName, Notice]] = [
            ("probation", notice("opened", 150, happened_s=happened_s))
        ]
        result = evaluate(scenario, seen, START_MS, 1.0)
        assert len(result.outcomes[0].matched) == counted, happened_s
    assert "happened in [30, 60]" in str(result)


def test_a_checked_config_runs_nabij_on_the_scenario_clock_with_default_timers() -> None:
    """Scaled settings carry the speed and anchor and keep the default timers, which the check
    accepts; a different --speed or a changed timer is refused, by key."""
    scenario = load_scenario("approach")
    scaled = scaled_settings(Settings(), 30.0, anchor_ms=START_MS)
    assert (scaled.clock.speed, scaled.clock.anchor_ms) == (30.0, START_MS)
    assert scaled.proximity.location_unknown_s == Settings().proximity.location_unknown_s
    assert scaled.policy("proximity_alarm") == DEFAULT_ESCALATION["proximity_alarm"]
    assert timescale_problems(scaled, scenario, 30.0) == []
    assert timescale_problems(scaled, scenario, None) == []
    assert timescale_problems(Settings(), scenario, None) == []
    (problem,) = timescale_problems(scaled, scenario, 100.0)
    assert problem.startswith("clock.speed = 30, but --speed 100")
    slow = scaled.model_copy(
        update={
            "escalation": {
                "proximity_alarm": scaled.policy("proximity_alarm").model_copy(
                    update={"ack_timeout_s": 2.0}
                )
            }
        }
    )
    (problem,) = timescale_problems(slow, scenario, 30.0)
    assert problem.startswith("escalation.proximity_alarm.ack_timeout_s = 2")


def test_a_clock_speed_needs_an_anchor() -> None:
    """`[clock] speed` other than 1 without `anchor_ms` is a configuration error."""
    with pytest.raises(ValidationError, match="anchor_ms"):
        Settings.model_validate({"clock": {"speed": 10}})
    assert Settings.model_validate({"clock": {"speed": 1}}).clock.anchor_ms is None


def test_written_settings_load_back_as_the_same_settings() -> None:
    """`--write-config` output is a valid nabij.toml holding exactly the scaled settings."""
    import tomllib

    scaled = scaled_settings(Settings(), 100.0)
    assert Settings.model_validate(tomllib.loads(settings_toml(scaled))) == scaled
