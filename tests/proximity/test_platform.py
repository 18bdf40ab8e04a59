"""The platform watch (`core/platform.py`) through the engine: nabij tells when it is blind,
groups a mass silence into one notice, leaves an isolated silence its own, and says each outage
once (also after a restart from the persisted state)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nabij.contract import AlarmSignal
from nabij.keys import Shard
from nabij.settings import PlatformSettings, ProximitySettings
from services.proximity.core.engine import Effects, ProximityEngine
from services.proximity.core.platform import PlatformState, burst_of, platform_state_decoder
from services.proximity.core.shards import platform_settings
from services.proximity.core.state import state_encoder
from tests.proximity import T0, fix_at, order

S = 1_000
PAIRS = 30  # 60 devices in force
PLATFORM = PlatformSettings(
    blind_after_s=60, quiet_after_s=90, group_window_s=60, group_min_devices=10
)
PROXIMITY = ProximitySettings(location_unknown_s=180, victim_silence_s=300)
ORDERS = [order(f"O-{i:02d}", f"ank-{i:02d}", (f"vic-{i:02d}",)) for i in range(PAIRS)]
DEVICES = [d for i in range(PAIRS) for d in (f"ank-{i:02d}", f"vic-{i:02d}")]


def fresh_engine() -> ProximityEngine:
    return ProximityEngine(ORDERS, PROXIMITY, platform=PLATFORM)


def report(eng: ProximityEngine, devices: list[str], seq: int, now_ms: int) -> None:
    effects = Effects()
    for device in devices:
        eng.apply(fix_at(device, seq, now_ms, 5_000), now_ms, effects)


def tick(eng: ProximityEngine, now_ms: int, *, broker_up: bool = True) -> list[AlarmSignal]:
    effects = Effects()
    eng.tick(now_ms, effects, broker_up=broker_up)
    return effects.signals


def run(
    eng: ProximityEngine,
    start_s: int,
    end_s: int,
    talking: list[str],
    *,
    broker_up: bool = True,
) -> list[AlarmSignal]:
    """One tick a second from `start_s` to `end_s`; `talking` devices report every 10 s."""
    signals: list[AlarmSignal] = []
    for second in range(start_s, end_s):
        now = T0 + second * S
        if second % 10 == 0 and talking:
            report(eng, talking, second + 1, now)
        signals += tick(eng, now, broker_up=broker_up)
    return signals


def platform(signals: list[AlarmSignal]) -> list[tuple[str, str]]:
    return [(s.kind, s.action) for s in signals if s.order_id is None]


def own_silence(signals: list[AlarmSignal]) -> set[str]:
    kinds = {"location_unknown", "victim_unprotected", "device_offline"}
    return {s.order_id or "" for s in signals if s.kind in kinds and s.action == "open"}


def test_broker_unreachable_is_one_degraded_and_one_restored_naming_every_order() -> None:
    """The broker gone beyond blind_after_s: one platform_degraded listing every order in force,
    no order's own silence alarm while it lasts (however long), then one clear and one
    platform_restored when it is back and the devices are heard."""
    eng = fresh_engine()
    assert run(eng, 0, 30, DEVICES) == []
    report(eng, DEVICES, 99, T0 + 29 * S)  # traffic up to the moment the broker goes
    outage = run(eng, 30, 400, [], broker_up=False)
    assert platform(outage) == [("platform_degraded", "open")]
    opened = outage[0]
    assert opened.orders == tuple(sorted(o.id for o in ORDERS))
    assert (opened.order_id, opened.offender_device, opened.victim_device) == (None, None, None)
    assert "MQTT broker unreachable for 59 s" in opened.reason
    assert own_silence(outage) == set()
    back = run(eng, 400, 460, DEVICES)
    assert platform(back) == [("platform_degraded", "clear"), ("platform_restored", "open")]
    assert own_silence(back) == set()
    assert not any(eng.device(d).grouped for d in DEVICES)
    assert back[0].alarm_key == outage[0].alarm_key == "platform_degraded|1"
    assert back[1].alarm_key == "platform_restored|1"


def test_many_devices_silent_within_the_window_are_one_grouped_notice() -> None:
    """20 of 60 devices stop within 50 s: one platform_degraded naming their orders only, and
    none of them raises its own silence alarm; the others' orders are not named."""
    eng = fresh_engine()
    run(eng, 0, 20, DEVICES)
    silent = DEVICES[:20]  # ten orders, both devices
    talking = DEVICES[20:]
    signals: list[AlarmSignal] = []
    for k, second in enumerate(range(20, 70)):
        speaking = talking + silent[k // 3 + 1 :] if second % 10 == 0 else []
        if speaking:
            report(eng, speaking, second, T0 + second * S)
        signals += tick(eng, T0 + second * S)
    signals += run(eng, 70, 500, talking)
    assert platform(signals) == [("platform_degraded", "open")]
    grouped = signals[0]
    assert grouped.orders == tuple(f"O-{i:02d}" for i in range(10))
    assert "20 of 60 devices went silent or offline within 60 s" in grouped.reason
    assert own_silence(signals) == set()


def test_a_single_silent_device_keeps_its_own_alarm() -> None:
    """One offender stops: location_unknown for his order, no platform notice."""
    talking = DEVICES[1:]
    eng = fresh_engine()
    report(eng, DEVICES, 0, T0)
    signals = run(eng, 1, 400, talking)
    assert platform(signals) == []
    assert own_silence(signals) == {"O-00"}


def test_a_restart_mid_outage_does_not_tell_it_again() -> None:
    """The persisted state (and the devices' `grouped`) carries the outage: a new engine loaded
    from it sends no second platform_degraded, and restores once."""
    eng = fresh_engine()
    run(eng, 0, 30, DEVICES)
    assert platform(run(eng, 30, 200, [], broker_up=False)) == [("platform_degraded", "open")]
    saved = platform_state_decoder.decode(state_encoder.encode(eng.platform))
    restarted = fresh_engine()
    restarted.load([eng.device(d) for d in DEVICES], [])
    restarted.load_platform(saved)
    assert platform(run(restarted, 200, 300, [], broker_up=False)) == []
    back = run(restarted, 300, 340, DEVICES)
    assert platform(back) == [("platform_degraded", "clear"), ("platform_restored", "open")]
    assert restarted.platform == PlatformState(outage=1, orders=saved.orders)


def test_few_devices_all_silent_are_no_platform_outage() -> None:
    """Below group_min_devices in force, every device silent is each one's own alarm: nabij
    cannot tell a quiet deployment from a blind one by traffic alone."""
    eng = ProximityEngine([order()], PROXIMITY, platform=PLATFORM)
    report(eng, ["ank-0001", "vic-0001"], 0, T0)
    signals = run(eng, 1, 400, [])
    assert platform(signals) == []
    assert own_silence(signals) == {"O-1"}


@given(
    st.lists(st.integers(min_value=0, max_value=300), max_size=40),
    st.integers(min_value=1, max_value=60),
    st.integers(min_value=2, max_value=15),
)
def test_burst_of_matches_a_brute_force_window(
    offsets: list[int], window: int, trigger: int
) -> None:
    """`burst_of` finds a group exactly when some closed window within the last two holds at
    least `trigger` quiet devices (checked against every window, by brute force)."""
    now = 400
    quiet = [(t, f"d{i}") for i, t in enumerate(offsets)]
    recent = [t for t, _ in quiet if t > now - 2 * window]
    expected = any(
        start + window <= now and sum(start <= t <= start + window for t in recent) >= trigger
        for start in recent
    )
    burst = burst_of(quiet, now, window_ms=window, trigger=trigger)
    assert (burst is not None) == expected
    if burst is not None:
        assert len(burst) >= trigger


def test_devices_quiet_before_an_outage_neither_join_it_nor_hold_it_open() -> None:
    """Six devices broken long before the broker goes keep their own alarms: they are not
    grouped, and the outage is restored although they stay silent (6 >= half the trigger)."""
    eng = fresh_engine()
    broken, working = DEVICES[:6], DEVICES[6:]
    run(eng, 0, 30, DEVICES)
    early = run(eng, 30, 400, working)
    assert own_silence(early) == {"O-00", "O-01", "O-02"}
    report(eng, working, 400, T0 + 399 * S)
    outage = run(eng, 400, 700, [], broker_up=False)
    assert platform(outage) == [("platform_degraded", "open")]
    assert not any(eng.device(d).grouped for d in broken)
    back = run(eng, 700, 720, working)
    assert platform(back) == [("platform_degraded", "clear"), ("platform_restored", "open")]


def test_only_the_first_shard_judges_the_platform_with_its_share_of_the_trigger() -> None:
    """Shards: shard 1 of 2 judges for the system, its group trigger halved (its devices are a
    hashed half of the fleet); shard 2 never tells an outage (its devices keep their own
    alarms), so an outage is told once, not once per shard."""
    first = platform_settings(PLATFORM, Shard(1, 2))
    assert first is not None and first.group_min_devices == 5
    assert platform_settings(PLATFORM, Shard(1, 1)) == PLATFORM
    assert platform_settings(PLATFORM, Shard(2, 2)) is None
    told: dict[int, list[tuple[str, str]]] = {}
    for index in (1, 2):
        eng = ProximityEngine(
            ORDERS, PROXIMITY, platform=platform_settings(PLATFORM, Shard(index, 2))
        )
        report(eng, DEVICES, 1, T0)
        told[index] = platform(run(eng, 1, 400, [], broker_up=False))
    assert told == {1: [("platform_degraded", "open")], 2: []}
