"""Device state bookkeeping: the window of seen seqs that tells duplicates from late messages."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nabij.contract import DeviceEvent, Fix, Position
from services.proximity.core import history
from services.proximity.core.engine import Effects, ProximityEngine
from services.proximity.core.state import (
    RARE_DEFAULTS,
    SEEN_WINDOW,
    DeviceRare,
    DeviceState,
    ZoneState,
    decoded_device,
    device_state_decoder,
    encoded_device,
    state_encoder,
)
from tests.proximity import OFFENDER, T0, VICTIM, engine, event, fix_at, point_at


def test_seen_window_remembers_accepted_seqs_and_not_skipped_ones() -> None:
    """After accepting 0, 1, 3, seq 2 was never seen; 0, 1 and 3 were."""
    device = DeviceState("d")
    for seq in (0, 1, 3):
        device.advance_seq(seq)
    assert [device.seq_seen(seq) for seq in range(4)] == [True, True, False, True]
    device.mark_seen(2)
    assert device.seq_seen(2)


def test_seen_window_forgets_beyond_its_width() -> None:
    """A jump larger than the window forgets older seqs (they then count as out of order)."""
    device = DeviceState("d")
    device.advance_seq(0)
    device.advance_seq(SEEN_WINDOW)
    assert device.seq_seen(0)
    device.advance_seq(SEEN_WINDOW + 1)
    assert not device.seq_seen(0)
    device.advance_seq(10**12)
    assert device.unseen_below == (1 << SEEN_WINDOW) - 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=100))
def test_seen_window_matches_a_plain_set(seqs: list[int]) -> None:
    """Within the window, `seq_seen` agrees with the set of seqs accepted or marked late, and
    `committed_upto` stops below the lowest gap; the mask stays 64 bit."""
    device, accepted = DeviceState("d"), set()
    for seq in seqs:
        if seq > device.last_seq:
            device.advance_seq(seq)
        else:
            device.mark_seen(seq)
        accepted.add(seq)
        assert device.unseen_below < 2**SEEN_WINDOW
    window = range(max(0, device.last_seq - SEEN_WINDOW), device.last_seq + 1)
    assert [device.seq_seen(seq) for seq in window] == [seq in accepted for seq in window]
    gaps = [seq for seq in window if seq not in accepted]
    assert device.committed_upto() == (gaps[0] - 1 if gaps else device.last_seq)


def test_a_window_without_gaps_is_zero() -> None:
    """The window keeps the gaps: a device that sent every seq (or whose gap left the window)
    holds 0, the state a fresh device starts from."""
    device = DeviceState("d")
    for seq in range(100):
        device.advance_seq(seq)
    assert device.unseen_below == 0 and device.committed_upto() == 99
    device.advance_seq(101)
    assert device.unseen_below == 1 and device.committed_upto() == 99
    for seq in range(102, 102 + SEEN_WINDOW):
        device.advance_seq(seq)
    assert device.unseen_below == 0


def test_device_state_written_before_off_track_decodes_on_track() -> None:
    """State persisted by a service before `off_track` existed decodes after the upgrade, with
    the device on its track (no ring held back)."""
    old = msgspec.msgpack.encode({"device_id": "ank-0001", "last_seq": 7})
    state = device_state_decoder.decode("ank-0001", old)
    assert state.last_seq == 7 and state.off_track is False


def test_zones_are_none_while_empty() -> None:
    """A device holds no empty dict of its own for its zones (most never have one), and the last
    zone forgotten leaves None again: a state equals its own round trip."""
    device = DeviceState("d")
    assert device.zone_states is None and device.zones == {}
    device.set_zone("O-1|home", ZoneState())
    assert device.zones == {"O-1|home": ZoneState()}
    assert device.pop_zone("O-1|home") == ZoneState() and device.zone_states is None
    assert decoded_device("d", encoded_device(device, bytearray())) == device


def test_rare_fields_take_no_room_until_set_and_none_again_at_their_defaults() -> None:
    """Writing a default makes nothing; the first other value makes `rare`; the write that
    leaves every rare field at its default drops it again, so the state equals a fresh one."""
    device = DeviceState("d")
    device.refused, device.grouped, device.refused_since_ms = 0, False, None
    assert device.rare is None and device.refused == 0
    device.refused, device.refused_reason = 3, "seq_jump"
    assert device.rare == DeviceRare(refused=3, refused_reason="seq_jump")
    assert (device.refused, device.refused_reason) == (3, "seq_jump")
    device.refused = 0
    assert device.rare == DeviceRare(refused_reason="seq_jump")
    device.refused_reason = None
    assert device.rare is None and device == DeviceState("d")
    assert decoded_device("d", encoded_device(device, bytearray())) == device


def test_the_shared_defaults_cannot_be_written() -> None:
    """Hot paths read `device.rare or RARE_DEFAULTS`: a write to that one object would change
    every device without a `rare`, so it fails instead."""
    with pytest.raises(AttributeError):
        RARE_DEFAULTS.grouped = True  # type: ignore[misc]


# --- The stored format leaves out what a state repeats (`encoded_device`), and puts it back. ---

S = 1000
KINDS = ("fix", "fix", "fix", "late", "outlier", "jump", "reboot", "event", "silence")
steps = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(1, 120),  # seconds since the previous message
        st.floats(0.0, 2_000.0),  # metres from the Dam
        st.integers(-3_000, 3_000),  # delivery delay, ms (negative: the device clock is ahead)
    ),
    max_size=30,
)


def _drive(eng: ProximityEngine, plan: list[tuple[str, int, float, int]]) -> Iterator[None]:
    """Her messages as `plan` says, with a fix of the offender's after each: fixes, late ones
    (a coverage gap: this one and the next ones arrive minutes after they were measured), GPS
    jumps (one far off: an outlier; several that agree: a relocation), reboots (a new boot, its
    counter from 0 again), events, silences; yields after each message."""
    seq, boot, ts, now = 0, 0, T0, T0
    for kind, gap_s, distance_m, delay_ms in plan:
        ts += gap_s * S if kind != "silence" else 3_600 * S
        now = max(now, ts + (300 * S if kind == "late" else delay_ms))
        if kind == "reboot":
            seq, boot = 0, boot + 1
        if kind == "event":
            message: Fix | DeviceEvent = event(VICTIM, seq, ts, "status", batt=50)
        else:
            far = 50_000.0 if kind in ("outlier", "jump") else 0.0
            lat, lon = point_at(distance_m + far)
            message = Fix(
                device_id=VICTIM, seq=seq, ts=ts, lat=lat, lon=lon, acc=8.0, boot=f"b{boot}"
            )
        seq += 1
        eng.apply(message, now, Effects())
        eng.apply(fix_at(OFFENDER, seq + 1_000, ts - 30 * S, 900.0), now, Effects())
        yield


@settings(max_examples=150, deadline=None)
@given(steps)
def test_a_stored_state_decodes_to_the_live_one(
    plan: list[tuple[str, int, float, int]],
) -> None:
    """Whatever the fixes did to a state (late ones, outliers, relocations, reboots, events,
    silences past the history's window), the stored form, with its repeats left out, decodes to
    an equal state; and encoding leaves the live state as it was."""
    eng, buffer = engine(), bytearray()
    for _ in _drive(eng, plan):
        for device_id in (OFFENDER, VICTIM):
            live = eng.device(device_id)
            whole = state_encoder.encode(live)
            blob = encoded_device(live, buffer)
            assert state_encoder.encode(live) == whole
            assert decoded_device(device_id, blob) == live
            assert device_state_decoder.decode(device_id, blob) == live


def _stored(device: DeviceState) -> dict[str, object]:
    """The fields `encoded_device` stores for `device`, by name."""
    blob = msgspec.msgpack.decode(encoded_device(device, bytearray()))
    return dict(zip(["format", *DeviceState.__struct_fields__], blob, strict=True))


def _walked(every_s: int) -> DeviceState:
    """Her state after 20 fixes `every_s` apart, walking."""
    eng = engine()
    for i in range(20):
        at = T0 + i * every_s * S
        eng.apply(fix_at(VICTIM, i, at, 100.0 + i), at + 300, Effects())
    return eng.device(VICTIM)


def test_the_stored_state_leaves_out_its_repeats() -> None:
    """A device's id (the key holds it), its fix (its track's newest point), at a fix a minute
    its track (the history's 5 newest points: one byte says so), and its two times, the fix's
    (a step of 0 from them, 1 byte for 9), are not stored: ~172 bytes less (52 of the fix, 99
    of the track, 16 of the times)."""
    device = _walked(60)
    assert device.clock_offset_ms == 300 and device.fix is not None
    assert device.last_heard_ms == device.fix.ts == device.last_ts + 300
    stored = _stored(device)
    assert stored["device_id"] == "" and stored["fix"] is None
    assert stored["packed_track"] == bytes((5 << 2,))
    assert stored["last_ts"] == stored["last_heard_ms"] == 0
    whole = state_encoder.encode(device)
    assert len(whole) - len(encoded_device(device, bytearray())) == len(VICTIM) + 51 + 99 + 16


def test_a_device_counting_from_1_stores_seq_0s_gap_in_a_byte() -> None:
    """Firmware that counts from 1 leaves seq 0 unseen: for its first 64 messages the window's
    one gap, its highest bit (up to 9 bytes), stored as -1 (1 byte)."""
    eng = engine()
    for seq in range(1, 21):
        at = T0 + seq * 60 * S
        eng.apply(fix_at(VICTIM, seq, at, 100.0), at, Effects())
    device = eng.device(VICTIM)
    assert device.unseen_below == 1 << 19 and not device.seq_seen(0)
    assert _stored(device)["unseen_below"] == -1
    assert decoded_device(VICTIM, encoded_device(device, bytearray())) == device


def test_a_track_the_thinned_history_does_not_hold_is_stored_less_its_newest_point() -> None:
    """At a fix every 15 s the history keeps one 30 s apart, so the track is not its tail: it
    is stored whole but its newest point (the history's newest), 81 bytes for 100."""
    device = _walked(15)
    assert len(device.track) == 5 and device.history[-5:] != device.track
    assert _stored(device)["packed_track"] == b"\2" + device.packed_track[:-20]
    assert decoded_device(VICTIM, encoded_device(device, bytearray())) == device


POINTS = st.lists(
    st.tuples(
        st.integers(-900_000_000, 900_000_000),
        st.integers(-1_800_000_000, 1_800_000_000),
        st.integers(0, 100_000_000),
        st.integers(T0 - 10**9, T0 + 10**9),
    ),
    max_size=8,
)


INT64_ENDS = (-(2**63), 2**63 - 1)
MSGPACK_INTS = st.integers(-(2**63), 2**64 - 1)
"""Any integer msgpack holds: a step from a time this far may leave it (the state is then
stored whole)."""


@st.composite
def tracks_and_histories(draw: st.DrawFn) -> DeviceState:
    """A state whose track is the history's tail (or more points than it holds), or ends at its
    newest point, or not; in time order or not; any fix, any times, any seq window,
    candidates."""
    held = sorted(draw(POINTS), key=lambda point: point[3])
    history_points = b"".join(struct.pack("<iiIq", *point) for point in held)
    kind = draw(st.sampled_from(["tail", "longer", "newest", "other", "unordered"]))
    ordered = sorted(draw(POINTS), key=lambda point: point[3])
    own = b"".join(struct.pack("<iiIq", *point) for point in ordered)
    if kind == "tail":
        track = history_points[-draw(st.integers(0, 10)) * 20 :]
    elif kind == "longer":
        track = own + history_points
    elif kind == "newest":
        track = own + history_points[-20:]
    elif kind == "other":
        track = own
    else:  # its times back and forth (a server clock set back)
        track = b"".join(struct.pack("<iiIq", *point) for point in ordered[::-1] + ordered)
    fix = draw(
        st.sampled_from(
            [None, Position(52.0, 5.0, 8.0, T0)]
            + ([history.newest_position(track)] if track else [])
        )
    )
    offset = draw(st.none() | st.integers(-(2**40), 2**40) | st.sampled_from(INT64_ENDS))
    near = (fix.ts - (offset or 0)) if fix is not None else T0
    last_seq = draw(st.integers(-1, SEEN_WINDOW + 2) | st.integers(-1, 2**63 - 1))
    zero = 1 << (last_seq - 1) if 0 < last_seq <= SEEN_WINDOW else 0  # seq 0's gap
    return DeviceState(
        VICTIM,
        last_seq=last_seq,
        unseen_below=draw(
            st.sampled_from([0, zero, zero | 5, zero | 1 << 63])
            | st.integers(0, 2**64 - 1)
            | st.integers(-(2**63), -1)
        ),
        last_ts=draw(st.sampled_from([near, near + 1, near - 1, T0]) | MSGPACK_INTS),
        clock_offset_ms=offset,
        fix=fix,
        last_heard_ms=draw(
            st.none() | st.sampled_from([fix.ts if fix else T0, T0 + 1]) | MSGPACK_INTS
        ),
        packed_track=track,
        packed_history=history.coded(history_points),
        rare=DeviceRare(packed_candidates=own) if own and draw(st.booleans()) else None,
    )


@settings(max_examples=300, deadline=None)
@given(tracks_and_histories())
def test_any_track_against_any_history_round_trips(device: DeviceState) -> None:
    """Whatever the track is to the history (its tail, longer than it, ending at its newest
    point, apart from it, a time step back, empty; the history empty), whatever the fix,
    whatever the times (the fix's, near them, far, none, msgpack's extremes) and the seq
    window's gaps (seq 0's among them or not, none the engine makes), the stored state decodes
    to exactly the state encoded."""
    assert decoded_device(VICTIM, encoded_device(device, bytearray())) == device


def test_a_state_whose_fix_is_not_its_tracks_newest_point_round_trips() -> None:
    """What the engine never leaves is stored as it is, never guessed: a fix other than the
    track's newest point, no fix though a track, a fix without a track; times without a fix or
    an offset to step from, none heard though a fix, and times so far from the fix's that their
    step leaves msgpack's integers (the state stored whole)."""
    eng = engine()
    eng.apply(fix_at(VICTIM, 0, T0, 100.0), T0, Effects())
    eng.apply(fix_at(VICTIM, 1, T0 + 60 * S, 150.0), T0 + 60 * S, Effects())
    device = eng.device(VICTIM)
    assert device.fix is not None
    buffer = bytearray()
    far = msgspec.structs.replace(device, clock_offset_ms=-(2**63), last_ts=-(2**63))
    for odd in (
        msgspec.structs.replace(device, fix=None),
        msgspec.structs.replace(device, fix=msgspec.structs.replace(device.fix, acc=7.0)),
        msgspec.structs.replace(device, fix=msgspec.structs.replace(device.fix, ts=T0)),
        msgspec.structs.replace(device, packed_track=b""),
        msgspec.structs.replace(device, clock_offset_ms=None),
        msgspec.structs.replace(device, last_heard_ms=None),
        msgspec.structs.replace(device, fix=None, packed_track=b"", last_ts=T0 + 1),
        far,
        msgspec.structs.replace(far, last_heard_ms=2**64 - 1),
        DeviceState(VICTIM),
    ):
        assert decoded_device(VICTIM, encoded_device(odd, buffer)) == odd
    assert msgspec.msgpack.decode(encoded_device(far, buffer))[1] == VICTIM


def test_a_state_encoded_whole_decodes_as_it_is() -> None:
    """A state written with its id (`state_encoder`: tools, tests) leaves nothing out: it loads
    as written, whatever key it is read under."""
    eng = engine()
    eng.apply(fix_at(VICTIM, 0, T0, 100.0), T0, Effects())
    device = msgspec.structs.replace(eng.device(VICTIM), fix=None)
    assert device_state_decoder.decode("other", state_encoder.encode(device)) == device
