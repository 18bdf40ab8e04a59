"""Scheduled exemptions: weekly windows in the order's time zone, corridors, and window ends."""

from __future__ import annotations

import datetime as dt
from typing import Any

from nabij.config import Order
from nabij.contract import SetInterval, Warn
from services.proximity.core.engine import Effects
from services.proximity.core.exemptions import Exemptions
from tests.proximity import (
    DAM,
    OFFENDER,
    T0,
    VICTIM,
    Drive,
    commands_to,
    engine,
    fix_at,
    opens,
)

S = 1_000
AMS = dt.timezone(dt.timedelta(hours=1))  # Amsterdam in January (CET)


def ms(year: int, month: int, day: int, hour: int, minute: int, *, tz: dt.tzinfo = AMS) -> int:
    return round(dt.datetime(year, month, day, hour, minute, tzinfo=tz).timestamp() * 1000)


def exempt_order(**exemption: Any) -> Order:
    return Order.model_validate(
        {
            "id": "O-1",
            "offender_device": OFFENDER,
            "victim_devices": [VICTIM],
            "alarm_m": 500,
            "zone": [{"name": "home", "lat": DAM[0], "lon": DAM[1], "radius_m": 300}],
            "exemption": [exemption],
        }
    )


def test_windows_follow_local_time_including_past_midnight_and_summer_time() -> None:
    """A Monday 22:00-02:00 window holds Monday 23:00 and Tuesday 01:00 local time, not Monday
    21:59 or Tuesday 02:00; in July (CEST) the same local hours hold, an hour earlier in UTC."""
    rules = Exemptions(exempt_order(days=["mon"], start="22:00", end="02:00", rules=["proximity"]))
    assert rules.exempt("proximity", ms(2026, 1, 5, 23, 0), None)
    assert rules.exempt("proximity", ms(2026, 1, 6, 1, 0), None)
    assert not rules.exempt("proximity", ms(2026, 1, 5, 21, 59), None)
    assert not rules.exempt("proximity", ms(2026, 1, 6, 2, 0), None)
    summer = dt.timezone(dt.timedelta(hours=2))
    assert rules.exempt("proximity", ms(2026, 7, 6, 22, 30, tz=summer), None)
    assert not rules.exempt("proximity", ms(2026, 7, 6, 21, 30, tz=summer), None)
    assert not rules.exempt("home", ms(2026, 1, 5, 23, 0), None)  # only the rules it names


def test_an_exemption_suspends_the_rings_and_its_end_opens_them_on_the_tick() -> None:
    """During a proximity exemption the offender may stand 300 m from the victim: nothing opens.
    The tick at the window's end (no new fix needed) opens both rings at once."""
    start = ms(2026, 1, 5, 10, 0)
    eng = engine(
        [exempt_order(days=["mon"], start="10:00", end="10:30", rules=["proximity"])],
    )
    drive = Drive(eng)
    for i in range(120):
        t = start + i * 15 * S
        drive.fix(VICTIM, t, 5000, bearing=0)
        drive.fix(OFFENDER, t, 5300, bearing=0)
        effects = Effects()
        eng.tick(t, effects)
        assert effects.signals == []
        if t >= ms(2026, 1, 5, 10, 29):
            break
    end = ms(2026, 1, 5, 10, 30)
    drive.fix(VICTIM, end - 5 * S, 5000, bearing=0)
    drive.fix(OFFENDER, end - 5 * S, 5300, bearing=0)
    effects = Effects()
    eng.tick(end + 200, effects)
    assert [s.kind for s in opens(effects.signals)] == ["proximity_pre_alert", "proximity_alarm"]
    assert all("exemption" in s.reason for s in effects.signals)
    # His own rings (judged on her grid cell) were suspended alike and reopen with hers.
    assert commands_to(drive.effects.commands, OFFENDER) == []
    assert commands_to(effects.commands, OFFENDER) == [Warn(level="alarm"), SetInterval(seconds=15)]


def test_a_corridor_exemption_holds_only_inside_the_corridor() -> None:
    """A 'zone:home' exemption with a corridor around the eastern half of the zone: a fix there
    opens nothing; a fix in the western half (outside the corridor) opens the zone alarm."""
    lat, lon = DAM
    corridor = {
        "type": "Polygon",
        "coordinates": [[[lon, lat - 0.01], [lon + 0.02, lat - 0.01], [lon + 0.02, lat + 0.01],
                         [lon, lat + 0.01], [lon, lat - 0.01]]],
    }  # fmt: skip
    order = exempt_order(
        days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        start="00:00",
        end="23:59",
        rules=["zone"],
        corridor_geometry=corridor,
    )
    drive = Drive(engine([order]))
    t = ms(2026, 1, 7, 12, 0)
    for i in range(6):
        drive.fix(OFFENDER, t + i * 15 * S, 150, bearing=90)
    assert opens(drive.effects.signals) == []
    for i in range(6, 9):
        drive.fix(OFFENDER, t + i * 15 * S, 150, bearing=270)
    assert [s.zone for s in opens(drive.effects.signals)] == ["home"]


def test_orders_without_exemptions_cost_nothing_on_the_tick() -> None:
    """With no exemptions configured, the tick has no exempt pairs to look at."""
    eng = engine()
    eng.apply(fix_at(OFFENDER, 0, T0), T0, Effects())
    assert eng._exempt_pairs == ()
