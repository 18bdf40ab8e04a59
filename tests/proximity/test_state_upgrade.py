"""State written before an upgrade loads after it: nothing is lost on a restart into a new version.

`state_format_1.msgpack` holds the device and pair states that main (commit 941bab5, state
format 1: msgpack maps, the history a list of position maps) wrote after `before_the_gap` below,
as the service stores them: `{"devices": [offender, victim], "pair": pair}`;
`state_format_2.msgpack` the same from main at 31447c7 (format 2: arrays, the track a list of
positions, the rarely filled maps always maps); `state_format_3.msgpack` the same from main at
06e58d2 (format 3: points packed as float64 figures, his off the grid of format 4).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from nabij.contract import AlarmSignal
from services.proximity.core.engine import Effects, ProximityEngine
from services.proximity.core.state import (
    STATE_FORMAT,
    device_state_decoder,
    pair_state_decoder,
    state_encoder,
)
from tests.proximity import OFFENDER, T0, VICTIM, Drive, engine, fix_at, opens

S = 1000
PAIR = ("O-1", OFFENDER, VICTIM)
FORMAT_1 = Path(__file__).with_name("state_format_1.msgpack")
EARLIER_FORMATS = [
    FORMAT_1,
    *(Path(__file__).with_name(f"state_format_{n}.msgpack") for n in (2, 3)),
]


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
        [device_state_decoder.decode(blob) for blob in saved["devices"]],
        [pair_state_decoder.decode(saved["pair"])],
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
    state = drive.engine.device(VICTIM)
    blob = state_encoder.encode(state)
    assert msgspec.msgpack.decode(blob)[0] == STATE_FORMAT
    assert device_state_decoder.decode(blob) == state
    assert len(blob) < len(FORMAT_1.read_bytes()) / 2
