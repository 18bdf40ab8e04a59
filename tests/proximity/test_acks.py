"""nabij's confirmation to a device: cumulative, one per device heard, its own counter only."""

from __future__ import annotations

from nabij.config import Order, ProximitySettings
from nabij.contract import Committed, DeviceEvent, Fix, Topics, encode
from services.proximity.core.acks import committed_acks
from services.proximity.core.batch import run_batch
from services.proximity.core.engine import ProximityEngine
from tests.proximity.test_batch import Message

TOPICS = Topics("nabij/v1")
T0 = 1_790_000_000_000
ORDER = Order(id="O-1", offender_device="ank-1", victim_devices=["vic-1"], alarm_m=500)


def _fix(device: str, seq: int, boot: str = "b1") -> Message:
    fix = Fix(device, seq, T0 + seq * 1000, 52.37, 4.90, 5.0, boot=boot)
    return Message(TOPICS.device(device, "fix"), encode(fix))


def _acks(engine: ProximityEngine, batch: list[Message]) -> dict[str, Committed]:
    result = run_batch(engine, TOPICS, batch, T0 + 60_000, tick=False)
    return dict(committed_acks(engine.device(d) for d in result.counted))


def test_one_cumulative_confirmation_per_device_heard() -> None:
    """Three fixes of one device in a batch give one confirmation, of the newest; the partner,
    not heard, is told nothing."""
    engine = ProximityEngine([ORDER], ProximitySettings())
    acks = _acks(engine, [_fix("ank-1", 0), _fix("ank-1", 1), _fix("ank-1", 2)])
    assert acks == {"ank-1": Committed(seq=2, boot="b1")}


def test_a_repeat_is_confirmed_again() -> None:
    """A device whose confirmation was lost sends again: the duplicate is confirmed, so it stops."""
    engine = ProximityEngine([ORDER], ProximitySettings())
    _acks(engine, [_fix("vic-1", 0), _fix("vic-1", 1)])
    assert _acks(engine, [_fix("vic-1", 0)]) == {"vic-1": Committed(seq=1, boot="b1")}


def test_a_press_ahead_of_the_counter_is_not_confirmed_by_itself() -> None:
    """A press moves no counter: the confirmation still names the last counted message (the next
    fix's confirmation covers the press)."""
    engine = ProximityEngine([ORDER], ProximitySettings())
    _acks(engine, [_fix("vic-1", 0)])
    press = DeviceEvent("vic-1", 1, T0 + 1000, "aware_button", boot="b1")
    batch = [Message(TOPICS.device("vic-1", "event"), encode(press))]
    assert _acks(engine, batch) == {"vic-1": Committed(seq=0, boot="b1")}


def test_a_gap_holds_the_confirmation_below_it_until_the_resend_fills_it() -> None:
    """Seqs 2 and 3 lost (a broker crash) while 4 came through: nabij confirms only up to 1, so
    the device keeps 2 and 3; sent again, they come late but are accounted for, and the
    confirmation moves to 4."""
    engine = ProximityEngine([ORDER], ProximitySettings())
    assert _acks(engine, [_fix("ank-1", 0), _fix("ank-1", 1), _fix("ank-1", 4)]) == {
        "ank-1": Committed(seq=1, boot="b1")
    }
    assert _acks(engine, [_fix("ank-1", 2), _fix("ank-1", 3)]) == {
        "ank-1": Committed(seq=4, boot="b1")
    }


def test_a_press_that_overtook_earlier_fixes_is_covered_once_the_counter_passes_it() -> None:
    """A press (seq 2) taken before fix 1 moves no counter; when fix 3 comes, nothing below 3
    is missing and the confirmation covers the press too."""
    engine = ProximityEngine([ORDER], ProximitySettings())
    press = DeviceEvent("vic-1", 2, T0 + 2000, "aware_button", boot="b1")
    pressed = Message(TOPICS.device("vic-1", "event"), encode(press))
    _acks(engine, [_fix("vic-1", 0), pressed])
    assert _acks(engine, [_fix("vic-1", 1), _fix("vic-1", 3)]) == {
        "vic-1": Committed(seq=3, boot="b1")
    }


def test_nothing_is_confirmed_while_the_first_messages_of_a_boot_are_missing() -> None:
    """The first message nabij sees of a boot is seq 3: seqs 0-2 may be on their way again."""
    engine = ProximityEngine([ORDER], ProximitySettings())
    assert _acks(engine, [_fix("ank-1", 3)]) == {}
