"""The console's pure decisions: board order and grouping, role filtering, sessions, throttle."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from nabij.contract import Notice, Position
from services.alarm_gateway.core.alarms import AlarmRecord, PoliceFacts, SafeFacts
from services.alarm_gateway.core.notices import build_notices
from services.console.app import templates
from services.console.core import (
    POLICE_ONLY_NOTICE_FIELDS,
    Session,
    Throttle,
    Track,
    alarm_detail,
    board,
    notice_for,
    session_valid,
    urgency,
)
from tests.gateway.factories import OFFENDER_AT, T0, VICTIM_AT

VICTIM_DIGITS = (str(VICTIM_AT.lat), str(VICTIM_AT.lon))


def record(alarm_id: str, **fields: object) -> AlarmRecord:
    base = AlarmRecord(
        alarm_id=alarm_id, alarm_key=f"k-{alarm_id}", kind="proximity_alarm", order_id="ORD-1",
        offender_device="ank-1", victim_device="vic-1", priority=1, level=1,
        queues=["probation"], opened_at=T0, condition="active", acknowledged_by=None,
        acknowledged_at=None, next_due_ms=None, last_notice_at=T0, notices_sent=1,
        latest=SafeFacts(),
    )  # fmt: skip
    return msgspec.structs.replace(base, **fields)


records = st.builds(
    lambda n, priority, level, opened, order, victim, queues: record(
        f"AL-{n}",
        priority=priority,
        level=level,
        opened_at=T0 + opened,
        order_id=order,
        victim_device=victim,
        queues=queues,
    ),
    st.integers(0, 10**6),
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(0, 10**7),
    st.sampled_from(["ORD-1", "ORD-2"]),
    st.sampled_from([None, "vic-1", "vic-2"]),
    st.sampled_from([["probation"], ["police"], ["probation", "police"]]),
)


@given(st.lists(records, unique_by=lambda r: r.alarm_id, max_size=30))
def test_board_holds_each_visible_alarm_once_grouped_by_pair_most_urgent_first(
    alarms: list[AlarmRecord],
) -> None:
    """Every alarm of the role's queue appears exactly once, in the group of its order and pair;
    within a group and across groups (by their first) the most urgent come first."""
    for role in ("probation", "police"):
        situations = board(alarms, role, T0 + 10**7)
        shown = [a.alarm_id for s in situations for a in s.alarms]
        assert sorted(shown) == sorted(r.alarm_id for r in alarms if role in r.queues)
        for s in situations:
            pair = (s.order_id, s.offender_device, s.victim_device)
            assert all((a.order_id, a.offender_device, a.victim_device) == pair for a in s.alarms)
            assert [urgency(a) for a in s.alarms] == sorted(urgency(a) for a in s.alarms)
        firsts = [urgency(s.alarms[0]) for s in situations]
        assert firsts == sorted(firsts)


def test_urgency_is_priority_then_level_then_age() -> None:
    """P1 before P2; at equal priority the higher escalation level; then the older alarm."""
    old_p1 = record("AL-a", opened_at=T0)
    new_p1_escalated = record("AL-b", opened_at=T0 + 5000, level=2)
    new_p1 = record("AL-c", opened_at=T0 + 5000)
    p2 = record("AL-d", priority=2, opened_at=T0 - 10**6, order_id="ORD-2")
    [first, second] = board([p2, new_p1, old_p1, new_p1_escalated], "probation", T0 + 6000)
    assert [a.alarm_id for a in first.alarms] == ["AL-b", "AL-a", "AL-c"]
    assert [a.alarm_id for a in second.alarms] == ["AL-d"]
    assert first.alarms[1].age_s == 6 and first.alarms[0].since_notice_s == 6


def _police_notice_of(alarm: AlarmRecord) -> tuple[PoliceFacts, Notice]:
    police = PoliceFacts(reason="Offender within 480.3 m", distance_m=480.3, uncertainty_m=9.0,
                         offender=OFFENDER_AT, victim=VICTIM_AT, confidence=0.9,
                         closing_speed_mps=1.5, eta_s=30.0)  # fmt: skip
    alarm = msgspec.structs.replace(alarm, police=police, queues=["probation", "police"])
    notices = build_notices(alarm, "opened", T0, queues=["police"])
    return police, notices[0][1]


def test_probation_detail_never_carries_police_facts_even_if_given_them() -> None:
    """Handed the police facts and a police notice by mistake, the probation view still holds no
    victim position, exact distance, closing speed or time to contact; police see them all."""
    alarm = record("AL-1", queues=["probation", "police"])
    police, notice = _police_notice_of(alarm)
    assert notice.victim is not None
    probation = alarm_detail(alarm, [notice], "probation", T0, police=police, rings_m=[500.0])
    wire = msgspec.json.encode(probation).decode()
    assert not any(d in wire for d in VICTIM_DIGITS), wire
    assert "480" not in wire and probation.track == Track(offender=[])
    seen = alarm_detail(alarm, [notice], "police", T0, police=police, rings_m=[500.0, 1000.0])
    assert seen.track.victim == VICTIM_AT and seen.distance_m == 480.3
    assert seen.track.rings_m == [500.0, 1000.0] and seen.track.offender == [OFFENDER_AT]


def test_notice_for_probation_drops_every_police_only_field() -> None:
    """A police notice shown to probation keeps none of the police-only fields."""
    _police, notice = _police_notice_of(record("AL-1"))
    stripped = set(msgspec.json.decode(msgspec.json.encode(notice_for(notice, "probation"))))
    assert not stripped & POLICE_ONLY_NOTICE_FIELDS
    assert notice_for(notice, "police") is notice


def test_timeline_holds_only_the_alarms_own_notices_in_order() -> None:
    """Another alarm's notices are left out; police see the victim from the notices when the
    police facts are gone (retention)."""
    alarm, other = record("AL-1"), record("AL-2")
    _p, mine = _police_notice_of(alarm)
    _p, theirs = _police_notice_of(other)
    detail = alarm_detail(alarm, [theirs, mine], "police", T0, police=None, rings_m=[])
    assert [n.alarm_id for n in detail.timeline] == ["AL-1"]
    assert detail.track.victim == Position(VICTIM_AT.lat, VICTIM_AT.lon, VICTIM_AT.acc, T0)


def test_session_is_valid_until_it_expires() -> None:
    """A session ends at its expiry time on the injected clock, not a millisecond later."""
    session = Session("anna", "probation", "token", expires_at=T0 + 1000)
    assert session_valid(session, T0 + 999)
    assert not session_valid(session, T0 + 1000)


@given(st.lists(st.integers(0, 10_000), max_size=12), st.integers(0, 20_000))
def test_throttle_blocks_only_with_enough_recent_failures(failures: list[int], now: int) -> None:
    """Blocked exactly when `attempts` failures fall within the window before `now`, and only
    until the oldest of the last `attempts` of them leaves the window."""
    throttle = Throttle(attempts=3, window_ms=5000)
    recent = [at for at in failures if 0 <= now - at < 5000]
    wait = throttle.blocked_for_ms([at for at in failures if at <= now], now)
    assert (wait > 0) == (len(recent) >= 3)
    if wait > 0:
        assert (
            throttle.blocked_for_ms(failures, now + wait) == 0
            or len([at for at in failures if now + wait - 5000 <= at <= now + wait]) >= 3
        )


def test_platform_alarms_form_one_situation_that_names_their_orders() -> None:
    """A platform alarm (no order, no device) is its own situation on the board, first by
    priority, and its rows say how many orders nabij cannot see and which (both roles)."""
    blind = record(
        "AL-blind", kind="platform_degraded", order_id=None, offender_device=None,
        victim_device=None, queues=["probation", "police"], opened_at=T0 + 9000,
        latest=SafeFacts(orders=tuple(f"ORD-{i}" for i in range(7))),
    )  # fmt: skip
    back = msgspec.structs.replace(
        blind, alarm_id="AL-back", alarm_key="k-back", kind="platform_restored", priority=3
    )
    pair = record("AL-pair", level=2, queues=["probation", "police"])
    for role in ("probation", "police"):
        situations = board([pair, back, blind], role, T0 + 10_000)
        platform = [s for s in situations if s.order_id is None]
        assert len(platform) == 1
        assert [a.alarm_id for a in platform[0].alarms] == ["AL-blind", "AL-back"]
        assert platform[0].alarms[0].orders == blind.latest.orders
        html = templates.get_template("_rows.html").render(situations=situations)
        assert "all of nabij" in html
        assert "7 orders: ORD-0, ORD-1, ORD-2, ORD-3, ORD-4, …" in html
        assert "None" not in html


def test_a_platform_alarm_page_lists_every_order_it_concerns() -> None:
    """The alarm page of a platform alarm names all its orders instead of one order's devices."""
    orders = tuple(f"ORD-{i}" for i in range(7))
    blind = record(
        "AL-blind", kind="platform_degraded", order_id=None, offender_device=None,
        victim_device=None, latest=SafeFacts(orders=orders),
    )  # fmt: skip
    detail = alarm_detail(blind, [], "police", T0, police=None, rings_m=[])
    html = templates.get_template("alarm.html").render(detail=detail, session=None, map_data={})
    assert "7 not seen: " + ", ".join(orders) in html
    assert "None" not in html
