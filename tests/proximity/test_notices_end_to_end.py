"""From fixes to dispatch notices through the replay driver: new fields and privacy."""

from __future__ import annotations

from pathlib import Path

from nabij.contract import Notice
from services.replay.timeline import replay
from tests.roles import assert_probation_safe
from tests.scenarios.tracks import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def notices(name: str) -> list[tuple[str, Notice]]:
    sc = load_scenario(SCENARIOS / name)
    timeline = replay(sc.config, sc.records, tail_s=200)
    return [(line.queue or "", line.notice) for line in timeline.lines if line.notice is not None]


def test_zone_notices_name_the_zone_and_carry_no_victim_position() -> None:
    """A zone alarm's notices name the zone (field and reason), carry the offender's position
    and a confidence, and no victim position on any queue; it escalates to police unacknowledged."""
    every = notices("zone_cycling_through.toml")
    found = [(q, n) for q, n in every if n.kind == "zone_alarm"]
    # The replay's 200 s tail of silence adds location_unknown; nothing else may appear.
    assert {n.kind for _, n in every} - {"zone_alarm"} == {"location_unknown"}
    assert [(q, n.event) for q, n in found][:3] == [
        ("probation", "opened"),
        ("probation", "escalated"),
        ("police", "escalated"),
    ]
    for _, notice in found:
        assert notice.zone == "school" and "'school'" in notice.reason
        assert notice.victim is None and notice.offender is not None


def test_proximity_notices_carry_confidence_speed_and_eta_and_keep_privacy() -> None:
    """Police proximity notices carry confidence, closing speed, eta and the victim's position;
    probation ones a distance band and `approaching` instead, and no position at all."""
    found = notices("car_both_moving.toml")
    proximity = [(q, n) for q, n in found if n.kind.startswith("proximity")]
    police = [n for q, n in proximity if q == "police"]
    probation = [n for q, n in proximity if q == "probation"]
    assert police and all(n.confidence is not None for n in police)
    assert any(n.closing_speed_mps and n.eta_s is not None for n in police)
    assert probation and all(n.distance_band is not None for n in probation)
    assert any(n.approaching for n in probation)
    for notice in probation:
        assert_probation_safe(notice)
    for queue, notice in found:
        assert (notice.victim is not None) == (queue == "police")
