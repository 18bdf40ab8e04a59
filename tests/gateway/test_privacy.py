"""The privacy rules of the gateway core: bands, the order-wide shield, stored facts, retention."""

from __future__ import annotations

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nabij.contract import DistanceBand
from nabij.settings import PrivacySettings
from services.alarm_gateway.core.alarms import AlarmBook, PoliceFacts, distance_band
from services.alarm_gateway.core.notices import DISTANCE_WITHHELD, without_lengths
from services.alarm_gateway.core.retention import plan_trim
from tests.gateway.factories import OFFENDER_AT, SECOND, T0, only_notice, resolve, settings, signal
from tests.roles import assert_probation_safe

DAY_MS = 86_400_000
EDGES = PrivacySettings().probation_distance_bands_m


@pytest.mark.parametrize(
    ("distance", "band"),
    [
        (0.0, DistanceBand(min_m=0, max_m=100)),
        (99.9, DistanceBand(min_m=0, max_m=100)),
        (100.0, DistanceBand(min_m=100, max_m=250)),
        (480.0, DistanceBand(min_m=250, max_m=500)),
        (1999.0, DistanceBand(min_m=1000, max_m=2000)),
        (2000.0, DistanceBand(min_m=2000)),
    ],
)
def test_distance_band_takes_the_edges_around_the_distance(
    distance: float, band: DistanceBand
) -> None:
    """A band is [lower edge, upper edge): its lower edge inclusive, open-ended past the last."""
    assert distance_band(distance, EDGES) == band


@pytest.mark.parametrize("edges", [[], [0, 100], [100, 100], [500, 250], [-5, 10]])
def test_band_edges_must_be_positive_and_increasing(edges: list[float]) -> None:
    """Band edges that are empty, not positive or not strictly increasing are refused."""
    with pytest.raises(pydantic.ValidationError):
        PrivacySettings(probation_distance_bands_m=edges)


@given(
    before=st.text(alphabet="abc ,.;()-", max_size=20),
    number=st.one_of(
        st.integers(0, 99_999).map(str),
        st.floats(0, 9999, allow_nan=False).map(lambda v: f"{v:.1f}"),
        st.integers(1000, 99_999).map(lambda v: f"{v:,}"),
    ),
    space=st.sampled_from(["", " ", "  "]),
    unit=st.sampled_from(["m", "M", "km", "metres", "meters", "metre", "kilometres"]),
    after=st.sampled_from(["", ".", ")", " from", ", ring", ";"]),
)
def test_lengths_are_withheld_from_any_text(
    before: str, number: str, space: str, unit: str, after: str
) -> None:
    """However a length is written (number, separators, spacing, unit), it is withheld."""
    text = f"{before}{number}{space}{unit}{after}"
    assert without_lengths(text) == f"{before}{DISTANCE_WITHHELD}{after}"


def test_no_offender_position_to_probation_while_an_alarm_about_her_is_open() -> None:
    """A battery alarm carries the offender's position to probation, unless a proximity alarm of
    the same order is open: then he may be within the ring of her and his position would turn
    the band into an annulus. Once that alarm is resolved, positions flow again."""
    book = AlarmBook(settings())
    alone = book.apply(signal("b1", kind="battery_low", key="batt-1", distance_m=None), T0)
    assert only_notice(alone, "probation").offender == OFFENDER_AT
    near = book.apply(signal("p1"), T0 + SECOND)
    assert only_notice(near, "probation").offender is None
    during = book.apply(signal("b2", kind="strap_tamper", key="tamper", distance_m=None), T0 + 2)
    assert only_notice(during, "probation").offender is None
    book.apply(resolve("r1", near.upserts[0].alarm_id), T0 + 3 * SECOND)
    after = book.apply(signal("b3", kind="device_offline", key="off", distance_m=None), T0 + 4)
    assert only_notice(after, "probation").offender == OFFENDER_AT


def test_a_victim_press_reaches_probation_without_any_position() -> None:
    """Her press goes to police with both positions and to probation with neither."""
    book = AlarmBook(settings())
    press = book.apply(signal("a1", kind="aware_button", distance_m=120.0), T0)
    police, probation = only_notice(press, "police"), only_notice(press, "probation")
    assert police.victim is not None and police.offender is not None
    assert police.distance_m == 120.0
    assert probation.victim is None and probation.offender is None
    assert probation.distance_band == DistanceBand(min_m=100, max_m=250)
    assert_probation_safe(probation)


def test_resolving_stamps_the_police_facts_for_retention() -> None:
    """A resolved record keeps its police facts (for the police hash), stamped when resolved."""
    book = AlarmBook(settings())
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    [record] = book.apply(resolve("r1", alarm_id), T0 + 5 * SECOND).resolved
    assert record.police is not None and record.police.resolved_at == T0 + 5 * SECOND


def test_retention_trims_by_age_and_keeps_open_alarms_facts() -> None:
    """Police facts of alarms resolved longer ago than the limit go; those resolved since, and
    those of open alarms, stay; the streams are trimmed at wall time minus their limits."""
    privacy = PrivacySettings(
        police_facts_retention_s=86_400, police_queue_retention_s=7200, resolved_retention_s=60
    )
    police = {
        "old": PoliceFacts(reason="x", resolved_at=T0 - DAY_MS),
        "recent": PoliceFacts(reason="x", resolved_at=T0 - DAY_MS + 1),
        "open": PoliceFacts(reason="x"),
    }
    wall = T0 + 123
    trim = plan_trim(privacy, T0, wall, police)
    assert trim.expired_police_facts == ["old"]
    assert trim.police_queue_min_id == f"{wall - 7_200_000}-0"
    assert trim.resolved_min_id == f"{wall - 60_000}-0"
