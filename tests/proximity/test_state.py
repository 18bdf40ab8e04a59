"""Device state bookkeeping: the window of seen seqs that tells duplicates from late messages."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.proximity.core.state import (
    RARE_DEFAULTS,
    SEEN_WINDOW,
    DeviceRare,
    DeviceState,
    ZoneState,
    device_state_decoder,
    state_encoder,
)


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
    state = device_state_decoder.decode(old)
    assert state.last_seq == 7 and state.off_track is False


def test_zones_are_none_while_empty() -> None:
    """A device holds no empty dict of its own for its zones (most never have one), and the last
    zone forgotten leaves None again: a state equals its own round trip."""
    device = DeviceState("d")
    assert device.zone_states is None and device.zones == {}
    device.set_zone("O-1|home", ZoneState())
    assert device.zones == {"O-1|home": ZoneState()}
    assert device.pop_zone("O-1|home") == ZoneState() and device.zone_states is None
    assert device_state_decoder.decode(state_encoder.encode(device)) == device


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
    assert device_state_decoder.decode(state_encoder.encode(device)) == device


def test_the_shared_defaults_cannot_be_written() -> None:
    """Hot paths read `device.rare or RARE_DEFAULTS`: a write to that one object would change
    every device without a `rare`, so it fails instead."""
    with pytest.raises(AttributeError):
        RARE_DEFAULTS.grouped = True  # type: ignore[misc]
