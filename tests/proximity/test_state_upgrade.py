"""State written before an upgrade loads after it: nothing is lost on a restart into a new version.

`state_format_1.msgpack` holds the device and pair states that main (commit 941bab5, state
format 1: msgpack maps, the history a list of position maps) wrote after `before_the_gap` below,
as the service stores them: `{"devices": [offender, victim], "pair": pair}`;
`state_format_2.msgpack` the same from main at 31447c7 (format 2: arrays, the track a list of
positions, the rarely filled maps always maps); `state_format_3.msgpack` the same from main
at 06e58d2 (format 3: every field in one array, points packed as float64 figures, off the grid
of format 4), and under "full" a device state with every field set (`FULL` below; written by
`DeviceState(**FULL)` with the packed fields packed); `state_format_4.msgpack` the same from
main at 122fa38 (format 4: the history's points whole, 20 bytes each, where format 5 codes
them), its "full" that format-3 state as main loaded and stored it; `state_format_5.msgpack`
the same from main at b84d854 (format 5: every state whole, where format 6 leaves out its id
and a fix that is its track's newest point), its "full" format 4's as main loaded and stored it;
`state_format_6.msgpack` the same from main at 554714b (format 6: the track's points whole,
where format 7 stores what its history does not hold), its "full" format 5's as main loaded
and stored it (`encoded_device`); `state_format_7.msgpack` the same from main at 79b6189
(format 7: the times whole, where format 8 stores them as steps from the fix's), its "full"
format 6's as main loaded and stored it.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from nabij.contract import AlarmSignal, Position
from services.proximity.core.engine import Effects, ProximityEngine
from services.proximity.core.state import (
    STATE_FORMAT,
    DeviceState,
    RingState,
    ZoneState,
    decoded_device,
    device_state_decoder,
    encoded_device,
    pair_state_decoder,
)
from tests.proximity import OFFENDER, T0, VICTIM, Drive, engine, fix_at, opens

S = 1000
PAIR = ("O-1", OFFENDER, VICTIM)
FORMAT_1 = Path(__file__).with_name("state_format_1.msgpack")
FORMAT_3 = Path(__file__).with_name("state_format_3.msgpack")
FORMAT_4 = Path(__file__).with_name("state_format_4.msgpack")
FORMAT_5 = Path(__file__).with_name("state_format_5.msgpack")
FORMAT_6 = Path(__file__).with_name("state_format_6.msgpack")
FORMAT_7 = Path(__file__).with_name("state_format_7.msgpack")
EARLIER_FORMATS = [
    FORMAT_1,
    Path(__file__).with_name("state_format_2.msgpack"),
    FORMAT_3,
    FORMAT_4,
    FORMAT_5,
    FORMAT_6,
    FORMAT_7,
]


def at(i: int) -> Position:
    return Position(lat=52.0 + i / 1000, lon=5.0 + i / 1000, acc=5.0 + i, ts=T0 + i * 15_000)


FULL: dict[str, object] = {
    "device_id": "full-1",
    "epoch": 3,
    "boot": "b3",
    "prior_boots": {"b1": 40, "b2": 7},
    "last_seq": 12,
    "seen_below": 0b1011,  # seqs 11, 10 and 8 seen (and 12, the newest)
    "seen_above": (15, 17),
    "last_ts": T0 + 1,
    "strays": 2,
    "stray_seq": 5,
    "clock_offset_ms": -1500,
    "fix": at(9),
    "last_heard_ms": T0 + 2,
    "online": False,
    "battery_low": True,
    "batt": 9,
    "location_unknown": True,
    "gnss_lost": True,
    "interval_s": 15,
    "warned": "alarm",
    "status_changes": 4,
    "track": [at(1), at(2)],
    "candidates": [at(3)],
    "outliers": 6,
    "off_track": True,
    "led_to": at(4),
    "zones": {"O-1|home": ZoneState(ring=RingState("inside", T0 + 3), signed_m=-12.5, acc=8.0)},
    "history": [at(5), at(6), at(7)],
    "presses": ("abc",),
    "faults": ("clock", "refused"),
    "clock_off_since_ms": T0 + 4,
    "refused": 4,
    "refused_since_ms": T0 + 5,
    "refused_reason": "seq_jump",
    "offline_open": True,
    "online_since_ms": T0 + 6,
    "drops_ms": (T0 + 7, T0 + 8),
    "powered_off": True,
    "unprotected": ("offline",),
    "tick_signals": 7,
    "grouped": True,
}
"""Every field of format 3 set, none to its default (the packed ones as positions)."""
SEEN = [8, 10, 11, 12]
"""The seqs `FULL`'s window says were seen (format 4 keeps the gaps: `unseen_below`)."""


def before_the_gap(drive: Drive) -> None:
    """Ten minutes of her fixes at home; his far away, until he loses coverage after two."""
    for i in range(41):
        drive.fix(VICTIM, T0 + i * 15 * S)
        if i <= 8:
            drive.fix(OFFENDER, T0 + i * 15 * S + 500, 3000)


def backlog(eng: ProximityEngine) -> list[AlarmSignal]:
    """His backlog after the gap: he was 100 m from her minutes ago; uploaded at once."""
    effects = Effects()
    arrival = T0 + 620 * S
    for seq, measured_s in enumerate(range(135, 601, 15), start=9):
        eng.apply(fix_at(OFFENDER, seq, T0 + measured_s * S, 100), arrival, effects)
    return effects.signals


@pytest.mark.parametrize("stored", EARLIER_FORMATS, ids=lambda p: p.stem)
def test_state_of_an_earlier_format_loads_exactly_and_decides_the_same(stored: Path) -> None:
    """Main's stored state decodes to exactly the state this version holds after the same input
    (her 21 history positions and both tracks included; his positions, off the grid, put on it),
    and his backlog then meets her history the same way: the same late alarm, signal for signal,
    as in an engine that never restarted. The pair keeps the distance its last comparison
    measured on his unrounded fix: within 1 cm of the one on the grid."""
    drive = Drive(engine())
    before_the_gap(drive)
    saved = msgspec.msgpack.decode(stored.read_bytes())
    restored = engine()
    restored.load(
        [
            device_state_decoder.decode(device_id, blob)
            for device_id, blob in zip((OFFENDER, VICTIM), saved["devices"], strict=True)
        ],
        [pair_state_decoder.decode(saved["pair"], PAIR)],
    )
    for device in (OFFENDER, VICTIM):
        assert restored.device(device) == drive.engine.device(device)
    pair, same_pair = restored.pair(PAIR), drive.engine.pair(PAIR)
    assert pair.last_distance_m is not None and same_pair.last_distance_m is not None
    assert abs(pair.last_distance_m - same_pair.last_distance_m) < 0.01
    assert msgspec.structs.replace(pair, last_distance_m=same_pair.last_distance_m) == same_pair
    assert len(restored.device(VICTIM).history) == 21
    assert len(restored.device(OFFENDER).track) == len(restored.device(VICTIM).track) == 5
    signals = backlog(restored)
    assert signals == backlog(drive.engine)
    (alarm,) = opens(signals, "proximity_alarm")
    assert alarm.late_s is not None


def test_state_is_stored_in_the_current_format_and_round_trips() -> None:
    """What the service writes now is an array led by the current format (no field names) that
    decodes to the same state, history and all."""
    drive = Drive(engine())
    before_the_gap(drive)
    drive.engine.freeze()
    blob = drive.engine.encoded_device(VICTIM)
    state = drive.engine.device(VICTIM)
    assert msgspec.msgpack.decode(blob)[0] == STATE_FORMAT
    assert device_state_decoder.decode(VICTIM, blob) == state
    assert len(blob) < len(FORMAT_1.read_bytes()) / 2


def test_a_format_3_state_with_every_field_set_converts_exactly() -> None:
    """Each of format 3's fields, the rarely set ones included, reads the same after the
    conversion (none left at a default), and the converted state round-trips."""
    blob = msgspec.msgpack.decode(FORMAT_3.read_bytes())["full"]
    state = device_state_decoder.decode("full-1", blob)
    fields = {name: value for name, value in FULL.items() if name != "seen_below"}
    assert {name: getattr(state, name) for name in fields} == fields
    assert [seq for seq in range(13) if state.seq_seen(seq)] == SEEN
    assert state.committed_upto() == -1  # seq 0 was never seen (nor 1-7, 9)
    assert state.rare is not None
    assert decoded_device("full-1", encoded_device(state, bytearray())) == state


@pytest.mark.parametrize(
    ("stored", "number"), [(FORMAT_4, 4), (FORMAT_5, 5), (FORMAT_6, 6), (FORMAT_7, 7)]
)
def test_a_format_4_to_7_state_with_every_field_set_converts_exactly(
    stored: Path, number: int
) -> None:
    """Format 4's to 7's full state (format 3's, stored by main) loads as format 3's does: every
    field, its three history positions coded, and it round-trips."""
    blob = msgspec.msgpack.decode(stored.read_bytes())["full"]
    assert msgspec.msgpack.decode(blob)[0] == number
    state = device_state_decoder.decode("full-1", blob)
    assert state == device_state_decoder.decode(
        "full-1", msgspec.msgpack.decode(FORMAT_3.read_bytes())["full"]
    )
    assert state.history == FULL["history"]
    assert decoded_device("full-1", encoded_device(state, bytearray())) == state


def test_a_format_3_state_at_defaults_converts_without_its_rare_fields() -> None:
    """A format-3 state whose rarely set fields are all defaults holds none (`rare` None), as
    the same state built now does: the two compare equal."""
    blob = msgspec.msgpack.encode([3, "d", 0, "b", None, 5, 0b11111])  # seqs 0-5 seen
    assert device_state_decoder.decode("d", blob) == DeviceState("d", boot="b", last_seq=5)
    assert device_state_decoder.decode("d", blob).rare is None
