"""Persisted state of devices and pairs (msgspec structs; the shell stores them as msgpack)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

import msgspec

from nabij.contract import Position, WarnLevel
from services.proximity.core import history as packing

Phase = Literal["outside", "entering", "inside", "exiting"]
PairKey = tuple[str, str, str]
"""(order_id, offender_device, victim_device)."""

# How many sequence numbers below `last_seq` are remembered, to tell a redelivery ("duplicate")
# from a late message that was never seen ("out_of_order").
SEEN_WINDOW = 64
SEEN_MASK = (1 << SEEN_WINDOW) - 1

STATE_FORMAT: Final = 4
"""Device states are stored as msgpack arrays led by this number (no field names: a third of a
device state; pair states are small maps that omit their defaults). Earlier formats still load,
converted (`_DeviceStateDecoder`): format 3, the same array with 32-byte packed points (float64
figures: its points and `fix` are put on `history`'s grid as they load); format 2, as format 3
with the track and the candidates as lists of positions and the rarely filled maps (prior boots,
zones) a map even when empty; format 1, a map by field name, the history a list of position maps
as well. A new field goes last, with a default (arrays written before it still decode); any
other change is a new number, with a decoder for this one. Versions before format 4 cannot read
it: no rollback past it."""


class RingState(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """Where one pair stands relative to one ring. Frozen: an unchanged step returns the same
    object, so the engine detects change by identity."""

    phase: Phase = "outside"
    since_ts: int = 0
    """Device time of the last phase change."""
    reported_m: float | None = None
    """Distance last sent in an open or update signal while the ring is open."""


_OUTSIDE: Final = RingState()
"""Every ring's start, one object: a frozen state is shared, not copied per pair or zone."""


class ZoneState(msgspec.Struct, omit_defaults=True, gc=False):
    """Where an offender stands relative to one exclusion zone of one order."""

    ring: RingState = _OUTSIDE
    signed_m: float | None = None
    """Last distance to the zone's boundary, negative inside."""
    acc: float | None = None
    """Effective accuracy radius of the fix that gave `signed_m`."""
    exempt: bool = False
    """The last evaluation fell in an exemption window (the tick re-checks when it ends)."""


_NO_ZONES: Final[Mapping[str, ZoneState]] = MappingProxyType({})


class DeviceState(msgspec.Struct, array_like=True, tag=STATE_FORMAT, gc=False):
    """Untracked by the garbage collector like `Position`: its lists and dicts hold numbers,
    strings and untracked structs, and nothing refers back to a state, so it is in no cycle."""

    device_id: str
    epoch: int = 0
    """Restarts of the device's counter so far (a new boot, or a reset taken from old firmware).
    Signal ids carry it, so a seq reused after a reboot is never taken for a redelivery."""
    boot: str | None = None
    """Boot id of the newest accepted message (None: firmware that sends none)."""
    prior_boots: dict[str, int] | None = None
    """Recently ended boots -> their highest seq: a redelivery from them stays a duplicate.
    None while there are none (nearly every device): no empty dict per device."""
    last_seq: int = -1
    seen_below: int = 0
    """Bit k set: seq `last_seq - 1 - k` was seen, taken or late (see `SEEN_WINDOW`)."""
    seen_above: tuple[int, ...] = ()
    """Seqs above `last_seq` already taken (a press or tamper that overtook earlier messages):
    they join the window once the counter passes them."""
    last_ts: int = 0
    """Device time of the message with the newest accepted seq (orders, never judges)."""
    strays: int = 0
    """Messages in a row, increasing, whose seq lies far below the counter (a reset to confirm)."""
    stray_seq: int = -1
    clock_offset_ms: int | None = None
    """Server receive time minus device time, from the newest fix that arrived live."""
    fix: Position | None = None
    """Newest accepted position; its `ts` is server time (when nabij places its measurement)."""
    last_heard_ms: int | None = None
    """Server time of the newest accepted position; silence is measured on it."""
    online: bool = True
    """What the device last said of its presence (status, power_off, a fix). The debounced
    device_offline alarm is `offline_open` (see `presence.py`)."""
    battery_low: bool = False
    batt: int | None = None
    location_unknown: bool = False
    gnss_lost: bool = False
    interval_s: int | None = None
    """Fix interval last asked of the device."""
    warned: WarnLevel | None = None
    """Warn level last sent to the device."""
    status_changes: int = 0
    """Counts presence changes, so signal ids born from status messages (no seq) stay unique."""
    packed_track: bytes = b""
    """The last few accepted fixes (`motion.TRACK_LEN`), oldest first (the newest is `fix`),
    packed (`history`): velocity, jumps. One object, not a `Position` each (~150 bytes)."""
    packed_candidates: bytes = b""
    """Outliers (GPS jumps) in a row that agree with each other, packed; enough relocate."""
    outliers: int = 0
    """Outliers seen in total (their signal-free inputs still advance `seq`)."""
    off_track: bool = False
    """The newest fix lies off the device's recent track (`motion.on_track`): perhaps a
    multipath jump, so no ring of its pairs opens on it until a next fix is back on a track.
    Absent from state written before this field: decoded as False (on track)."""
    led_to: Position | None = None
    """While `off_track`: where the track before that fix leads at its time (`motion.led_to`);
    a ring opens on an off-track fix when this position enters it too."""
    zone_states: dict[str, ZoneState] | None = None
    """Offender devices: `{order_id}|{zone name}` -> where the device stands to that zone; None
    while empty (every victim, most offenders): no empty dict per device. Read it as `zones`,
    change it with `set_zone` and `pop_zone`."""
    packed_history: bytes = b""
    """Recent positions on server time, oldest first, thinned (`timing.remember`), packed
    (`history`): a backlog from the partner is judged against where this device was then."""
    presses: tuple[str, ...] = ()
    """Digests of the newest safety events (press, tamper): only the very same one is a repeat."""
    faults: tuple[str, ...] = ()
    """Causes of an open `device_fault` ("clock", "refused")."""
    clock_off_since_ms: int | None = None
    """Server time since which the device clock has been off beyond the limit."""
    refused: int = 0
    """Messages refused or out of order since the last accepted one."""
    refused_since_ms: int | None = None
    refused_reason: str | None = None
    # --- presence debounced, and the victim's protection (`presence.py`, `conditions.py`) ---
    offline_open: bool = False
    """device_offline is open: offline beyond the dwell, or the connection unstable."""
    online_since_ms: int | None = None
    """Server time since which the device has been online without a drop (set on return)."""
    drops_ms: tuple[int, ...] = ()
    """Server times of the latest drops (online -> offline), oldest first; the newest is when
    the current offline stretch began. At most `flap_drops + 1`, within the flap window."""
    powered_off: bool = False
    """The current offline stretch began with a power_off event (said in the reason)."""
    unprotected: tuple[str, ...] = ()
    """Victim devices: the causes of the open victim_unprotected alarm (empty: none open)."""
    tick_signals: int = 0
    """Ticks that signalled about this device, so their signal ids (no input behind them) stay
    unique and a replay after a crash gives the same ids."""
    grouped: bool = False
    """Quiet within a platform outage (`platform.py`): the grouped `platform_degraded` notice
    speaks for it, so its own silence and offline alarms wait until it is released."""

    @property
    def zones(self) -> Mapping[str, ZoneState]:
        return self.zone_states or _NO_ZONES

    def set_zone(self, key: str, state: ZoneState) -> None:
        if self.zone_states is None:
            self.zone_states = {}
        self.zone_states[key] = state

    def pop_zone(self, key: str) -> ZoneState | None:
        """Forget the state of zone `key` (returned, if there was one)."""
        if self.zone_states is None:
            return None
        state = self.zone_states.pop(key, None)
        if not self.zone_states:
            self.zone_states = None
        return state

    @property
    def history(self) -> list[Position]:
        """The history as positions (unpacked on each call: for tests and tools)."""
        return packing.unpack(self.packed_history)

    @property
    def track(self) -> list[Position]:
        """The track as positions (unpacked on each call: for tests and tools)."""
        return packing.unpack(self.packed_track)

    @property
    def candidates(self) -> list[Position]:
        """The candidates as positions (unpacked on each call: for tests and tools)."""
        return packing.unpack(self.packed_candidates)

    def tag(self, seq: int) -> str:
        """What names input `seq` of this device in signal ids: unique across counter restarts."""
        return str(seq) if self.epoch == 0 else f"{seq}@{self.epoch}"

    def seq_seen(self, seq: int) -> bool:
        """Whether `seq` (<= last_seq) was accepted before, as far as the window remembers."""
        if seq == self.last_seq:
            return True
        offset = self.last_seq - 1 - seq
        return 0 <= offset < SEEN_WINDOW and bool(self.seen_below >> offset & 1)

    def advance_seq(self, seq: int) -> None:
        """Accept `seq` (> last_seq) as the newest message of the device."""
        delta = seq - self.last_seq
        # A large jump forgets everything (and avoids building a huge int only to mask it).
        mask = (self.seen_below << delta) & SEEN_MASK if delta < SEEN_WINDOW else 0
        if self.last_seq >= 0 and delta <= SEEN_WINDOW:
            mask |= 1 << (delta - 1)
        self.seen_below = mask
        self.last_seq = seq
        if self.seen_above:
            passed = [s for s in self.seen_above if s <= seq]
            self.seen_above = tuple(s for s in self.seen_above if s > seq)
            for earlier in passed:
                self.mark_seen(earlier)

    def mark_seen(self, seq: int) -> None:
        """Remember a late `seq` (< last_seq) that was seen without moving the counter: a press
        or tamper, or a message that came after a newer one (after a broker crash)."""
        offset = self.last_seq - 1 - seq
        if 0 <= offset < SEEN_WINDOW:
            self.seen_below |= 1 << offset

    def committed_upto(self) -> int:
        """The highest seq at or below which every message was seen, as far as the window
        remembers (-1: none). A gap holds it below the gap until the gap is filled or leaves the
        window (`SEEN_WINDOW` messages later)."""
        window = min(SEEN_WINDOW, max(self.last_seq, 0))
        unseen = ~self.seen_below & ((1 << window) - 1)
        if not unseen:
            return self.last_seq
        # The highest unseen bit is the lowest unseen seq: everything below it was seen.
        return self.last_seq - 2 - (unseen.bit_length() - 1)


class PairState(msgspec.Struct, omit_defaults=True, gc=False):
    order_id: str
    offender_device: str
    victim_device: str
    pre_alert: RingState = _OUTSIDE
    alarm: RingState = _OUTSIDE
    last_obs_ts: int = 0
    """Device time of the newest comparison; never goes backwards."""
    last_distance_m: float | None = None
    last_uncertainty_m: float | None = None
    exempt: bool = False
    """The last comparison fell in an exemption window (the tick re-checks when it ends)."""
    offender_pre_alert: RingState = _OUTSIDE
    offender_alarm: RingState = _OUTSIDE
    """The offender's rings, judged on her grid cell (`cells`): his warnings and interval."""

    @property
    def key(self) -> PairKey:
        return (self.order_id, self.offender_device, self.victim_device)


def _none_if_empty(value: dict[str, Any]) -> dict[str, Any] | None:
    return value or None


@dataclass(frozen=True, slots=True)
class _Earlier:
    """How a field of `DeviceState` was stored before, and how that converts (exactly)."""

    name: str
    type: object
    empty: Callable[[], object]
    convert: Callable[[Any], object]


def _on_the_grid(position: Position | None) -> Position | None:
    if position is None:
        return None
    return packing.quantised(position.lat, position.lon, position.acc, position.ts)[0]


_FORMAT_3_DIFFERS: Final = {
    name: _Earlier(name, bytes, bytes, packing.from_format_3)
    for name in ("packed_track", "packed_candidates", "packed_history")
} | {"fix": _Earlier("fix", Position | None, lambda: None, _on_the_grid)}
"""Fields of format 4 that format 3 stored otherwise: points of float64 figures."""
_FORMAT_2_DIFFERS: Final = _FORMAT_3_DIFFERS | {
    "packed_track": _Earlier("track", list[Position], list, packing.pack),
    "packed_candidates": _Earlier("candidates", list[Position], list, packing.pack),
    "prior_boots": _Earlier("prior_boots", dict[str, int], dict, _none_if_empty),
    "zone_states": _Earlier("zones", dict[str, ZoneState], dict, _none_if_empty),
}
"""Fields of format 4 that format 2 stored otherwise (its history as format 3 did)."""
_FORMAT_1_DIFFERS: Final = _FORMAT_2_DIFFERS | {
    "packed_history": _Earlier("history", list[Position], list, packing.pack),
}


def _earlier_format(
    name: str, differs: Mapping[str, _Earlier], **options: Any
) -> type[msgspec.Struct]:
    """The struct of an earlier format: `DeviceState`'s fields (same defaults; those added since
    decode as their default), those in `differs` as they were stored then."""
    fields = []
    for field in msgspec.structs.fields(DeviceState):
        earlier = differs.get(field.name)
        if earlier is None:
            fields.append((field.name, field.type, _same_default(field)))
        else:
            fields.append(
                (earlier.name, earlier.type, msgspec.field(default_factory=earlier.empty))
            )
    return msgspec.defstruct(name, fields, **options)


def _same_default(field: msgspec.structs.FieldInfo) -> object:
    # Both unset (NODEFAULT) keeps the field required; the stubs allow setting one at most.
    return msgspec.field(default=field.default, default_factory=field.default_factory)  # type: ignore[call-overload]


def _upgraded(state: msgspec.Struct, differs: Mapping[str, _Earlier]) -> DeviceState:
    fields = msgspec.structs.asdict(state)
    for name, earlier in differs.items():
        fields[name] = earlier.convert(fields.pop(earlier.name))
    return DeviceState(**fields)


_MAP_HEADERS: Final = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])
"""First byte of a msgpack map: a format-1 state (format 2 and later are arrays)."""


class _DeviceStateDecoder:
    """Decodes the current format, and the earlier ones (converted) for state written before."""

    def __init__(self) -> None:
        format_3 = _earlier_format("DeviceStateFormat3", _FORMAT_3_DIFFERS, array_like=True, tag=3)
        format_2 = _earlier_format("DeviceStateFormat2", _FORMAT_2_DIFFERS, array_like=True, tag=2)
        self._differs = {format_3: _FORMAT_3_DIFFERS, format_2: _FORMAT_2_DIFFERS}
        # Arrays are told apart by their first element, the format number (the struct's tag).
        self._arrays: msgspec.msgpack.Decoder[msgspec.Struct] = msgspec.msgpack.Decoder(
            DeviceState | format_3 | format_2
        )
        self._format_1: msgspec.msgpack.Decoder[msgspec.Struct] = msgspec.msgpack.Decoder(
            _earlier_format("DeviceStateFormat1", _FORMAT_1_DIFFERS)
        )

    def decode(self, blob: bytes) -> DeviceState:
        if blob[:1] and blob[0] in _MAP_HEADERS:
            return _upgraded(self._format_1.decode(blob), _FORMAT_1_DIFFERS)
        state = self._arrays.decode(blob)
        if isinstance(state, DeviceState):
            return state
        return _upgraded(state, self._differs[type(state)])


# How the shell stores this state (msgpack), built once: the proximity service writes and reads
# it, the console and the tests only read device state.
state_encoder: Final = msgspec.msgpack.Encoder()
device_state_decoder: Final = _DeviceStateDecoder()
pair_state_decoder: Final = msgspec.msgpack.Decoder(PairState)
