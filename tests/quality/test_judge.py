"""The judge on hand-made truth and signals: what counts as detected, missed, false, a flap."""

from __future__ import annotations

from nabij.contract import AlarmSignal, SignalAction
from nabij.settings import ProximitySettings
from simulators.movement import Route, Waypoint
from simulators.noise import NoiseParams
from simulators.quality.case import START_MS, CaseSpec, DeviceSpec, Ring, Window
from simulators.quality.judge import SETTLE_S, alarms, judge

SETTINGS = ProximitySettings()  # enter dwell 10 s
STILL = Route([Waypoint(52.37, 4.89)])


def spec(
    *, interval_s: float = 15.0, gaps: tuple[Window, ...] = (), sigma_m: float = 3.0
) -> CaseSpec:
    offender = DeviceSpec("ank-1", STILL, NoiseParams(sigma_m=sigma_m), interval_s, gaps=gaps)
    victim = DeviceSpec("vic-1", STILL, NoiseParams(), interval_s)
    return CaseSpec("T1", "test", 1, 3600.0, offender, victim, 500.0, 1000.0)


def signal(
    at_s: float, action: SignalAction, kind: str = "proximity_alarm", key: str = "k"
) -> AlarmSignal:
    return AlarmSignal(
        signal_id=f"{key}-{at_s}-{action}",
        action=action,
        kind=kind,  # type: ignore[arg-type]  # the tests use judged kinds only
        alarm_key=key,
        order_id="ORD-T1",
        offender_device="ank-1",
        at=START_MS + round(at_s * 1000),
        reason="test",
    )


def alarm_ring(*breaches: tuple[float, float]) -> list[Ring]:
    return [Ring("proximity_alarm", tuple(Window(a, b) for a, b in breaches))]


def test_an_alarm_within_dwell_plus_two_intervals_detects_the_breach() -> None:
    """Breach at 100 s; the alarm at 135 s is within 10 + 2 x 15 + 5 s: detected, 35 s to alarm."""
    score = judge(spec(), alarm_ring((100, 600)), [signal(135, "open")], SETTINGS)
    (outcome,) = score.outcomes
    assert outcome.detected and outcome.promised
    assert outcome.time_to_alarm_s == 35
    assert score.false_alarms == {}


def test_an_alarm_after_the_deadline_is_a_late_miss() -> None:
    """Deadline 100 + 40 + 5 s: an alarm at 150 s misses the promise, marked late."""
    score = judge(
        spec(), alarm_ring((100, 600)), [signal(100 + 40 + SETTLE_S + 5, "open")], SETTINGS
    )
    (outcome,) = score.outcomes
    assert not outcome.detected and outcome.promised
    assert outcome.why == "unexplained (late)"


def test_a_short_breach_or_a_coarse_receiver_makes_no_promise() -> None:
    """Shorter than dwell + 2 intervals, or GNSS worse than 25 m: missed, with the rule named."""
    short = judge(spec(), alarm_ring((100, 130)), [], SETTINGS).outcomes[0]
    assert not short.promised and short.why.startswith("shorter than dwell")
    coarse = judge(spec(sigma_m=30.0), alarm_ring((100, 600)), [], SETTINGS).outcomes[0]
    assert not coarse.promised and coarse.why.startswith("GNSS accuracy worse")


def test_a_breach_in_a_coverage_gap_is_due_after_the_gap() -> None:
    """The offender is out of coverage 90-400 s: the alarm at 420 s (backlog) detects the
    breach of 100 s; without the gap it would be a miss."""
    gap = (Window(90.0, 400.0),)
    found = judge(spec(gaps=gap), alarm_ring((100, 900)), [signal(420, "open")], SETTINGS)
    assert found.outcomes[0].detected
    assert (
        not judge(spec(), alarm_ring((100, 900)), [signal(420, "open")], SETTINGS)
        .outcomes[0]
        .detected
    )


def test_an_alarm_without_a_true_breach_is_false_and_unfounded_unless_near_the_ring() -> None:
    """Nothing inside: the alarm at 2000 s is false; when the truth was within 50 m beyond the
    ring then, it is false but not unfounded (the accuracy rule's benefit of the doubt)."""
    signals = [signal(2000, "open"), signal(2100, "clear")]
    far = judge(spec(), alarm_ring(), signals, SETTINGS)
    assert far.false_alarms == {"alarm": 1} and far.unfounded == {"alarm": 1}
    edge = [Ring("proximity_alarm", (), (Window(1990, 2050),))]
    near = judge(spec(), edge, signals, SETTINGS)
    assert near.false_alarms == {"alarm": 1} and near.unfounded == {}


def test_an_alarm_is_matched_by_kind_and_time_not_by_its_key() -> None:
    """Two key formats for the same alarm score the same; a pre-alert does not stand in for an
    alarm."""
    old = judge(spec(), alarm_ring((100, 600)), [signal(120, "open", key="a:b:c")], SETTINGS)
    new = judge(spec(), alarm_ring((100, 600)), [signal(120, "open", key="ORD|alarm")], SETTINGS)
    assert old == new and old.outcomes[0].detected
    pre = judge(
        spec(), alarm_ring((100, 600)), [signal(120, "open", "proximity_pre_alert")], SETTINGS
    )
    assert not pre.outcomes[0].detected


def test_a_reopen_soon_after_a_clear_is_a_flap() -> None:
    """Open, clear, open again 100 s later: one flap; updates are not alarms."""
    signals = [
        signal(120, "open"),
        signal(200, "update"),
        signal(700, "clear"),
        signal(800, "open"),
    ]
    score = judge(spec(), alarm_ring((100, 600), (790, 1200)), signals, SETTINGS)
    assert score.flaps == 1
    assert [(a.at_s, a.cleared_s) for a in alarms(signals)] == [(120, 700), (800, None)]


def test_a_breach_whose_backlog_is_never_uploaded_in_the_case_is_not_promised() -> None:
    """The offender's gap starts before the breach and lasts past the end of the case (3,600 s):
    nabij never receives those positions, so no rule can see the breach; the miss is named, not
    a broken promise. The same gap ending within the case keeps the promise."""
    unsent = judge(spec(gaps=(Window(0.0, 4000.0),)), alarm_ring((100, 900)), [], SETTINGS)
    (outcome,) = unsent.outcomes
    assert not outcome.promised and not outcome.detected
    assert outcome.why == "backlog not uploaded before the case ends"
    sent = judge(spec(gaps=(Window(0.0, 3000.0),)), alarm_ring((100, 900)), [], SETTINGS)
    assert sent.outcomes[0].promised and not sent.outcomes[0].detected
