"""One batch through the core: a message that trips a bug is set aside, the others go on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec

from nabij.config import Order, ProximitySettings
from nabij.contract import Fix, Topics, encode
from nabij.settings import PrivacySettings
from services.proximity.core.batch import run_batch, run_isolating
from services.proximity.core.cells import SnapGrid
from services.proximity.core.effects import Effects
from services.proximity.core.engine import ProximityEngine
from services.proximity.core.state import DeviceState
from services.proximity.core.topology import PairSpec

TOPICS = Topics("nabij/v1")
T0 = 1_790_000_000_000


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes


def fix_message(device: str, seq: int) -> Message:
    fix = Fix(device, seq, T0 + seq * 1000, 52.37, 4.90, 5.0)
    return Message(TOPICS.device(device, "fix"), encode(fix))


def test_a_bug_on_one_message_rejects_it_and_spares_the_rest() -> None:
    """An exception half-way through the engine (after the device's counter moved) becomes an
    `internal_error` rejection naming no values; the engine is rolled back to before the batch
    and the batch's other messages are applied, so no half-changed state is left to commit."""
    order = Order(id="O-1", offender_device="ank-1", victim_devices=["vic-1"], alarm_m=500)
    before = ProximityEngine([order], ProximitySettings())
    before.apply(Fix("vic-1", 0, T0, 52.37, 4.90, 5.0), T0, Effects())
    committed = msgspec.msgpack.encode([before.device(d) for d in ("ank-1", "vic-1")])

    def rollback() -> ProximityEngine:
        fresh = ProximityEngine([order], ProximitySettings())
        fresh.load(msgspec.msgpack.decode(committed, type=list[DeviceState]), [])
        return fresh

    engine = rollback()
    real_compare = engine._judge.compare

    def compare(spec: PairSpec, reporter: DeviceState, seq: int, now_ms: int, e: Effects):  # type: ignore[no-untyped-def]  # same signature as PairJudge.compare
        if reporter.last_seq == 2:
            raise ZeroDivisionError("52.37 4.90")  # a message that quotes a position
        return real_compare(spec, reporter, seq, now_ms, e)

    engine._judge.compare = compare  # type: ignore[method-assign]  # the bug planted for the test
    batch = [fix_message("ank-1", 1), fix_message("ank-1", 2), fix_message("vic-1", 3)]
    engine, result = run_isolating(engine, rollback, TOPICS, batch, T0 + 10_000, tick=False)
    ((message, rejection),) = result.rejected
    assert message is batch[1] and rejection.reason == "internal_error"
    assert "ZeroDivisionError" in rejection.detail and "52.37" not in rejection.detail
    assert engine.device("ank-1").last_seq == 1
    assert engine.device("vic-1").last_seq == 3


def test_a_backlog_with_many_bad_items_is_one_dead_letter() -> None:
    """1,000 backlog fixes with an out-of-range heading keep their positions (the heading is
    dropped), and the message becomes one dead letter holding the payload once (its first 4 KiB,
    with the size and sha256 of all of it), saying how many items were affected; each item is
    still there to be counted."""
    from services.proximity.service import Received, deadletters

    order = Order(id="O-1", offender_device="ank-1", victim_devices=["vic-1"], alarm_m=500)
    engine = ProximityEngine([order], ProximitySettings())
    bad = [
        {**msgspec.json.decode(fix_message("ank-1", n).payload), "heading": 360.0}
        for n in range(1, 1001)
    ]
    payload = msgspec.json.encode(bad)
    now = T0 + 2_000_000
    message = Received(TOPICS.device("ank-1", "fix"), payload, 1, 1, now, 1)
    result = run_batch(engine, TOPICS, [message], now, tick=False)
    assert len(result.rejected) == 1000
    assert engine.device("ank-1").last_seq == 1000
    (letter,) = deadletters(result.rejected, payload_bytes=4096)
    assert letter.payload == payload[:4096] and letter.reason == "salvaged"
    assert (letter.size, letter.sha256) == (len(payload), hashlib.sha256(payload).hexdigest())
    assert "995 more rejected items" in letter.detail


def test_a_press_with_a_broken_clock_or_field_is_still_a_press() -> None:
    """An aware press stamped ts 0 (clock reset) with an impossible battery value is acted on at
    server time, and the raw message is still kept as a rejection for inspection."""
    order = Order(id="O-1", offender_device="ank-1", victim_devices=["vic-1"], alarm_m=500)
    engine = ProximityEngine([order], ProximitySettings())
    payload = b'{"device_id": "vic-1", "seq": 7, "ts": 0, "type": "aware_button", "batt": -1}'
    message = Message(TOPICS.device("vic-1", "event"), payload)
    result = run_batch(engine, TOPICS, [message], T0, tick=False)
    ((_, rejection),) = result.rejected
    assert rejection.reason == "salvaged"
    (signal,) = result.effects.signals
    assert (signal.kind, signal.action, signal.at) == ("aware_button", "open", T0)


def test_the_offender_learns_nothing_from_intervals_before_an_alarm_opens() -> None:
    """An offender probing the edge of his pre-alert ring (the order's, grown by the snap error,
    around her grid cell's centre: `cells`), in for less than the dwell and out again, gets no
    command at all, while no signal has told an operator anything."""
    from tests.integration.stack import VICTIM_HOME, north_of

    order = Order(
        id="O-1", offender_device="ank-1", victim_devices=["vic-1"], alarm_m=500, pre_alert_m=1000
    )
    engine = ProximityEngine([order], ProximitySettings())
    grid = SnapGrid(PrivacySettings().offender_grid_m)
    edge = 1000 + grid.worst_error_m
    effects = Effects()
    for step, offset in enumerate([15, -5, 40, -10, 50]):
        ts = T0 + step * 5_000
        him = north_of(grid.centre(*VICTIM_HOME), edge + offset)
        engine.apply(Fix("vic-1", step + 1, ts, *VICTIM_HOME, 5.0), ts, effects)
        engine.apply(Fix("ank-1", step + 1, ts, *him, 5.0), ts, effects)
    assert effects.signals == []
    assert [c for device, c in effects.commands if device == "ank-1"] == []


def test_a_bug_in_the_tick_rolls_back_what_it_changed_and_the_batch_goes_on_without_it() -> None:
    """A tick that changes a device and then raises leaves nothing of its change behind: the
    engine is rolled back, the batch's messages are applied again without the tick, and the
    result names the tick's failure (for its dead letter) without quoting values."""
    order = Order(id="O-1", offender_device="ank-1", victim_devices=["vic-1"], alarm_m=500)

    def rollback() -> ProximityEngine:
        return ProximityEngine([order], ProximitySettings())

    engine = rollback()

    def failing_tick(now_ms: int, effects: Effects, *, broker_up: bool = True) -> None:
        engine.device("vic-1").battery_low = True  # a change made before the bug
        effects.changed_devices.add("vic-1")
        raise KeyError("52.37")

    engine.tick = failing_tick  # type: ignore[method-assign]  # the bug planted for the test
    batch = [fix_message("ank-1", 1)]
    after, result = run_isolating(engine, rollback, TOPICS, batch, T0 + 10_000, tick=True)
    assert after is not engine
    assert not after.device("vic-1").battery_low
    assert after.device("ank-1").last_seq == 1
    assert result.rejected == []
    assert result.tick_failure is not None and result.tick_failure.reason == "internal_error"
    assert "KeyError" in result.tick_failure.detail and "52.37" not in result.tick_failure.detail
    assert result.effects.changed_devices == {"ank-1"}
