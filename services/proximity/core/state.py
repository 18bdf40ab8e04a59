"""Persisted state of devices and pairs (msgspec structs; the shell stores them as msgpack)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Generic, Literal, TypeVar, cast, overload

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

STATE_FORMAT: Final = 8
"""Device states are stored as msgpack arrays led by this number (no field names: a third of a
device state; pair states: `PAIR_FORMAT`), the rarely set fields a nested array or nil
(`DeviceState.rare`), positions as `history`'s 20-byte points on a grid, the history coded
(`history.coded`: its newest point whole, the older ones as steps, ~8 bytes each), without what the
state repeats (`encoded_device`: its id, which the key holds, its fix, its track's newest point, of
its track what its history holds, and its two times as steps from the fix's; seq 0's gap in the seq
window, while it is in it, as a sign). Earlier formats still load, converted
(`_DeviceStateDecoder`): format 7, as 8 with its times and its gaps whole; format 6, as 7 with the
track's points whole; format 5, as 6 with nothing left out; format 4, as 5 with the history's
points whole; format 3, every field in the one array (`_FORMAT_3_ORDER`), with 32-byte packed
points (float64 figures: its points and `fix` are put on the grid as they load); format 2, as 3
with the track and the candidates as lists of positions and the rarely filled maps (prior boots,
zones) a map even when empty; format 1, a map by field name, the history a list of position maps as
well. A new field goes last (of the state or of `DeviceRare`), with a default (arrays written
before it still decode); any other change is a new number, with a decoder for this one. Versions
before format 8 cannot read it: no rollback past it."""


class RingState(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """Where one pair stands relative to one ring. Frozen: an unchanged step returns the same
    object, so the engine detects change by identity."""

    phase: Phase = "outside"
    since_ts: int = 0
    """Device time of the last phase change."""
    reported_m: float | None = None
    """Distance last sent in an open or update signal while the ring is open."""


OUTSIDE: Final = RingState()
"""Every ring's start, one object: a frozen state is shared, not copied per pair or zone."""


class ZoneState(msgspec.Struct, omit_defaults=True, gc=False):
    """Where an offender stands relative to one exclusion zone of one order."""

    ring: RingState = OUTSIDE
    signed_m: float | None = None
    """Last distance to the zone's boundary, negative inside."""
    acc: float | None = None
    """Effective accuracy radius of the fix that gave `signed_m`."""
    exempt: bool = False
    """The last evaluation fell in an exemption window (the tick re-checks when it ends)."""


_NO_ZONES: Final[Mapping[str, ZoneState]] = MappingProxyType({})


class DeviceRare(msgspec.Struct, array_like=True, gc=False):
    """The fields of `DeviceState` that nearly every device leaves at their defaults for good
    (boots, strays, refusals, faults, presses, zones, outliers, presence debouncing...). A state
    holds them in one of these only while one of them is set: `DeviceState.rare` is None
    otherwise, 8 bytes instead of ~190 a device. Read and write them as attributes of the
    state (`_RareField`); a hot path reads them as `(device.rare or RARE_DEFAULTS).field`."""

    prior_boots: dict[str, int] | None = None
    """Recently ended boots -> their highest seq: a redelivery from them stays a duplicate.
    None while there are none (nearly every device): no empty dict per device."""
    seen_above: tuple[int, ...] = ()
    """Seqs above `last_seq` already taken (a press or tamper that overtook earlier messages):
    they join the window once the counter passes them."""
    strays: int = 0
    """Messages in a row, increasing, whose seq lies far below the counter (a reset to confirm)."""
    stray_seq: int = -1
    battery_low: bool = False
    location_unknown: bool = False
    gnss_lost: bool = False
    status_changes: int = 0
    """Counts presence changes, so signal ids born from status messages (no seq) stay unique."""
    packed_candidates: bytes = b""
    """Outliers (GPS jumps) in a row that agree with each other, packed; enough relocate."""
    outliers: int = 0
    """Outliers seen in total (their signal-free inputs still advance `seq`)."""
    off_track: bool = False
    """The newest fix lies off the device's recent track (`motion.on_track`): perhaps a
    multipath jump, so no ring of its pairs opens on it until a next fix is back on a track."""
    led_to: Position | None = None
    """While `off_track`: where the track before that fix leads at its time (`motion.led_to`);
    a ring opens on an off-track fix when this position enters it too."""
    zone_states: dict[str, ZoneState] | None = None
    """Offender devices: `{order_id}|{zone name}` -> where the device stands to that zone; None
    while empty (every victim, most offenders): no empty dict per device. Read it as `zones`,
    change it with `set_zone` and `pop_zone`."""
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


class _Defaults(DeviceRare, frozen=True):  # type: ignore[misc]  # msgspec allows it
    """Frozen: the one shared object of defaults cannot be written by mistake."""


RARE_DEFAULTS: Final[DeviceRare] = _Defaults()
"""What a state without `rare` reads: `(device.rare or RARE_DEFAULTS).field`, no call."""
_EMPTY: Final = DeviceRare()
"""To tell a `rare` that went back to all defaults (a frozen subclass never compares equal)."""

T = TypeVar("T")


class _RareField(Generic[T]):
    """A field of `DeviceRare` as an attribute of `DeviceState` (~50 ns a read or write more
    than a field): `rare` is made on the first write of a value other than the default, and
    dropped again on a write that leaves all of them at their defaults."""

    __slots__ = ("default", "name")

    def __init__(self, default: T) -> None:
        self.default = default
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, device: None, owner: type) -> _RareField[T]: ...
    @overload
    def __get__(self, device: DeviceState, owner: type) -> T: ...
    def __get__(self, device: DeviceState | None, owner: type) -> T | _RareField[T]:
        if device is None:
            return self
        rare = device.rare
        return self.default if rare is None else cast(T, getattr(rare, self.name))

    def __set__(self, device: DeviceState, value: T) -> None:
        rare = device.rare
        if rare is None:
            if value == self.default:
                return
            rare = device.rare = DeviceRare()
        setattr(rare, self.name, value)
        if value == self.default and rare == _EMPTY:
            device.rare = None


class DeviceState(msgspec.Struct, array_like=True, tag=STATE_FORMAT, gc=False):
    """Untracked by the garbage collector like `Position`: its lists and dicts hold numbers,
    strings and untracked structs, and nothing refers back to a state, so it is in no cycle.
    Its fields are those nearly every message reads or writes; the rest are in `rare`."""

    device_id: str
    epoch: int = 0
    """Restarts of the device's counter so far (a new boot, or a reset taken from old firmware).
    Signal ids carry it, so a seq reused after a reboot is never taken for a redelivery."""
    boot: str | None = None
    """Boot id of the newest accepted message (None: firmware that sends none)."""
    last_seq: int = -1
    unseen_below: int = 0
    """Bit k set: seq `last_seq - 1 - k` (>= 0) was never seen, taken nor late (see
    `SEEN_WINDOW`). The gaps, not the seen seqs: a device with none holds 0, Python's shared
    small int, where a full window of seen bits is an int object of its own (~40 bytes)."""
    last_ts: int = 0
    """Device time of the message with the newest accepted seq (orders, never judges)."""
    clock_offset_ms: int | None = None
    """Server receive time minus device time, from the newest fix that arrived live."""
    fix: Position | None = None
    """Newest accepted position; its `ts` is server time (when nabij places its measurement)."""
    last_heard_ms: int | None = None
    """Server time of the newest accepted position; silence is measured on it."""
    online: bool = True
    """What the device last said of its presence (status, power_off, a fix). The debounced
    device_offline alarm is `offline_open` (see `presence.py`)."""
    batt: int | None = None
    interval_s: int | None = None
    """Fix interval last asked of the device."""
    warned: WarnLevel | None = None
    """Warn level last sent to the device."""
    packed_track: bytes = b""
    """The last few accepted fixes (`motion.TRACK_LEN`), oldest first (the newest is `fix`),
    packed (`history`): velocity, jumps. One object, not a `Position` each (~150 bytes)."""
    packed_history: bytes = b""
    """Recent positions on server time, oldest first, thinned (`timing.remember`), coded
    (`history.added`): a backlog from the partner is judged against where this device was then."""
    rare: DeviceRare | None = None
    """The rarely set fields, None while all are at their defaults (`DeviceRare`)."""

    prior_boots = _RareField[dict[str, int] | None](None)
    seen_above = _RareField[tuple[int, ...]](())
    strays = _RareField(0)
    stray_seq = _RareField(-1)
    battery_low = _RareField(False)
    location_unknown = _RareField(False)
    gnss_lost = _RareField(False)
    status_changes = _RareField(0)
    packed_candidates = _RareField(b"")
    outliers = _RareField(0)
    off_track = _RareField(False)
    led_to = _RareField[Position | None](None)
    zone_states = _RareField[dict[str, ZoneState] | None](None)
    presses = _RareField[tuple[str, ...]](())
    faults = _RareField[tuple[str, ...]](())
    clock_off_since_ms = _RareField[int | None](None)
    refused = _RareField(0)
    refused_since_ms = _RareField[int | None](None)
    refused_reason = _RareField[str | None](None)
    offline_open = _RareField(False)
    online_since_ms = _RareField[int | None](None)
    drops_ms = _RareField[tuple[int, ...]](())
    powered_off = _RareField(False)
    unprotected = _RareField[tuple[str, ...]](())
    tick_signals = _RareField(0)
    grouped = _RareField(False)

    @property
    def zones(self) -> Mapping[str, ZoneState]:
        return (self.rare or RARE_DEFAULTS).zone_states or _NO_ZONES

    def set_zone(self, key: str, state: ZoneState) -> None:
        zones = (self.rare or RARE_DEFAULTS).zone_states
        if zones is None:
            self.zone_states = zones = {}
        zones[key] = state

    def pop_zone(self, key: str) -> ZoneState | None:
        """Forget the state of zone `key` (returned, if there was one)."""
        zones = self.zone_states
        if zones is None:
            return None
        state = zones.pop(key, None)
        if not zones:
            self.zone_states = None
        return state

    @property
    def history(self) -> list[Position]:
        """The history as positions (unpacked on each call: for tests and tools)."""
        return packing.unpack(packing.uncoded(self.packed_history))

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
        return 0 <= offset < SEEN_WINDOW and not self.unseen_below >> offset & 1

    def advance_seq(self, seq: int) -> None:
        """Accept `seq` (> last_seq) as the newest message of the device."""
        delta = seq - self.last_seq
        # The seqs skipped (from the old newest up to this one) are unseen; a jump past the
        # window leaves every seq in it unseen (and builds no huge int only to mask it).
        if delta <= SEEN_WINDOW:
            skipped = (1 << (delta - 1)) - 1
            self.unseen_below = (self.unseen_below << delta) & SEEN_MASK | skipped
        else:
            self.unseen_below = SEEN_MASK
        self.last_seq = seq
        if (self.rare or RARE_DEFAULTS).seen_above:
            passed = [s for s in self.seen_above if s <= seq]
            self.seen_above = tuple(s for s in self.seen_above if s > seq)
            for earlier in passed:
                self.mark_seen(earlier)

    def mark_seen(self, seq: int) -> None:
        """Remember a late `seq` (< last_seq) that was seen without moving the counter: a press
        or tamper, or a message that came after a newer one (after a broker crash)."""
        offset = self.last_seq - 1 - seq
        if 0 <= offset < SEEN_WINDOW:
            self.unseen_below &= ~(1 << offset)

    def committed_upto(self) -> int:
        """The highest seq at or below which every message was seen, as far as the window
        remembers (-1: none). A gap holds it below the gap until the gap is filled or leaves the
        window (`SEEN_WINDOW` messages later)."""
        unseen = self.unseen_below
        if not unseen:
            return self.last_seq
        # The highest unseen bit is the lowest unseen seq: everything below it was seen.
        return self.last_seq - 2 - (unseen.bit_length() - 1)


class PairState(msgspec.Struct, omit_defaults=True, gc=False):
    """A pair's state as the shell stores it and the engine loads it; the engine holds it in
    the pair's record (`topology.PairSpec`, the same state fields) and makes this when asked."""

    order_id: str
    offender_device: str
    victim_device: str
    pre_alert: RingState = OUTSIDE
    alarm: RingState = OUTSIDE
    last_obs_ts: int = 0
    """Device time of the newest comparison; never goes backwards."""
    last_distance_m: float | None = None
    last_uncertainty_m: float | None = None
    exempt: bool = False
    """The last comparison fell in an exemption window (the tick re-checks when it ends)."""
    offender_pre_alert: RingState = OUTSIDE
    offender_alarm: RingState = OUTSIDE
    """The offender's rings, judged on her grid cell (`cells`): his warnings and interval."""

    @property
    def key(self) -> PairKey:
        return (self.order_id, self.offender_device, self.victim_device)


PAIR_FORMAT: Final = 2
"""Pair states are stored as msgpack arrays led by this number, without the ids: the Redis key
holds them (`Keys.pair_state`), and they were most of a stored pair (~40 bytes, not ~140).
Format 1, a map by field name with the ids, omitting the defaults, still loads
(`_PairStateDecoder`). Versions before format 2 cannot read it: no rollback past it."""


def _none_if_empty(value: dict[str, Any]) -> dict[str, Any] | None:
    return value or None


@dataclass(frozen=True, slots=True)
class _Earlier:
    """How a field of `DeviceState` was stored before, and how that converts (exactly)."""

    name: str
    type: object
    empty: Callable[[], object]
    convert: Callable[[Any], object]


_FORMAT_3_ORDER: Final = (
    *("device_id", "epoch", "boot", "prior_boots", "last_seq", "seen_below", "seen_above"),
    *("last_ts", "strays", "stray_seq", "clock_offset_ms", "fix", "last_heard_ms", "online"),
    *("battery_low", "batt", "location_unknown", "gnss_lost", "interval_s", "warned"),
    *("status_changes", "packed_track", "packed_candidates", "outliers", "off_track", "led_to"),
    *("zone_states", "packed_history", "presses", "faults", "clock_off_since_ms", "refused"),
    *("refused_since_ms", "refused_reason", "offline_open", "online_since_ms", "drops_ms"),
    *("powered_off", "unprotected", "tick_signals", "grouped"),
)
"""Format 3 (and earlier) kept every field in the state itself, in this order; format 4 moved
the rarely set ones into `rare` (`DeviceRare`), None while all are at their defaults, and keeps
the seq window's gaps (`unseen_below`) instead of its seen seqs."""
_RARE_NAMES: Final = tuple(field.name for field in msgspec.structs.fields(DeviceRare))


class _Format3Only(msgspec.Struct):
    seen_below: int = 0
    """Bit k set: seq `last_seq - 1 - k` was seen, taken or late (now `unseen_below`)."""


def _format_3_fields() -> list[msgspec.structs.FieldInfo]:
    """The fields as format 3 stored them: those of `DeviceState` and `DeviceRare`, flat."""
    by_name = {
        field.name: field
        for struct in (DeviceState, DeviceRare, _Format3Only)
        for field in msgspec.structs.fields(struct)
    }
    return [by_name[name] for name in _FORMAT_3_ORDER]


def _from_format_3(fields: dict[str, Any]) -> DeviceState:
    """The state of format 3's flat fields: the rare ones in `rare`, None if all are defaults;
    the window's unseen seqs (>= 0) where it kept the seen ones."""
    rare = DeviceRare(**{name: fields.pop(name) for name in _RARE_NAMES})
    window = (1 << min(SEEN_WINDOW, max(fields["last_seq"], 0))) - 1
    unseen = ~fields.pop("seen_below") & window
    return DeviceState(**fields, unseen_below=unseen, rare=None if rare == _EMPTY else rare)


def _on_the_grid(position: Position | None) -> Position | None:
    if position is None:
        return None
    return packing.quantised(position.lat, position.lon, position.acc, position.ts)[0]


def _history_of_format_3(packed: bytes) -> bytes:
    return packing.coded(packing.from_format_3(packed))


def _history_of_format_1(positions: list[Position]) -> bytes:
    return packing.coded(packing.pack(positions))


_FORMAT_3_DIFFERS: Final = {
    name: _Earlier(name, bytes, bytes, packing.from_format_3)
    for name in ("packed_track", "packed_candidates")
} | {
    "packed_history": _Earlier("packed_history", bytes, bytes, _history_of_format_3),
    "fix": _Earlier("fix", Position | None, lambda: None, _on_the_grid),
}
"""Fields of format 4 that format 3 stored otherwise: points of float64 figures (the history's
coded as format 5 holds it)."""
_FORMAT_2_DIFFERS: Final = _FORMAT_3_DIFFERS | {
    "packed_track": _Earlier("track", list[Position], list, packing.pack),
    "packed_candidates": _Earlier("candidates", list[Position], list, packing.pack),
    "prior_boots": _Earlier("prior_boots", dict[str, int], dict, _none_if_empty),
    "zone_states": _Earlier("zones", dict[str, ZoneState], dict, _none_if_empty),
}
"""Fields of format 4 that format 2 stored otherwise (its history as format 3 did)."""
_FORMAT_1_DIFFERS: Final = _FORMAT_2_DIFFERS | {
    "packed_history": _Earlier("history", list[Position], list, _history_of_format_1),
}


def _earlier_format(
    name: str, differs: Mapping[str, _Earlier], **options: Any
) -> type[msgspec.Struct]:
    """The struct of an earlier format: format 3's fields (same defaults; those added since
    decode as their default), those in `differs` as they were stored then."""
    fields = []
    for field in _format_3_fields():
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


_PAIR_IDS: Final = 3
"""`PairState`'s first fields, its ids: not stored (`PAIR_FORMAT`)."""
_StoredPair: Final = msgspec.defstruct(
    "StoredPair",
    [
        (field.name, field.type, _same_default(field))
        for field in msgspec.structs.fields(PairState)[_PAIR_IDS:]
    ],
    array_like=True,
    tag=PAIR_FORMAT,
    gc=False,
)
"""`PairState` as stored: its fields but the ids, in its order."""


def _upgraded(state: msgspec.Struct, differs: Mapping[str, _Earlier]) -> DeviceState:
    fields = msgspec.structs.asdict(state)
    for name, earlier in differs.items():
        fields[name] = earlier.convert(fields.pop(earlier.name))
    return _from_format_3(fields)


_MAP_HEADERS: Final = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])
"""First byte of a msgpack map: a format-1 state (format 2 and later are arrays)."""


def _same_fields(tag: int) -> type[msgspec.Struct]:
    """The struct of an earlier format that stored this one's fields (in full): 7, 6, 5, 4."""
    fields = [
        (field.name, field.type, _same_default(field))
        for field in msgspec.structs.fields(DeviceState)
    ]
    return msgspec.defstruct(f"DeviceStateFormat{tag}", fields, array_like=True, tag=tag, gc=False)


def _from_format_5(state: msgspec.Struct) -> DeviceState:
    return DeviceState(**msgspec.structs.asdict(state))


def _from_format_4(state: msgspec.Struct) -> DeviceState:
    fields = msgspec.structs.asdict(state)
    fields["packed_history"] = packing.coded(fields["packed_history"])
    return DeviceState(**fields)


# How the shell stores this state (msgpack), built once: the proximity service writes and reads
# it, the console and the tests only read device state.
state_encoder: Final = msgspec.msgpack.Encoder()
_encode_into: Final = state_encoder.encode_into
_decode: Final = msgspec.msgpack.Decoder(DeviceState).decode
"""Of this format only, for the engine's own blobs (`decoded_device`): it skips the checks of
`device_state_decoder`."""

_POINT_BYTES: Final = packing.POINT_BYTES
_is_newest: Final = packing.is_newest
_newest_position: Final = packing.newest_position
_newest_points: Final = packing.newest_points
_ends_with: Final = packing.ends_with
_NO_FIX: Final = 1
"""A stored track's first byte, this bit: the state has no fix, though a track (the engine
never leaves it so: a fix is its track's newest point)."""
_NEWEST_LEFT_OUT: Final = 2
"""A stored track's first byte, this bit: its points but the newest follow, that one is the
history's newest."""
_TAIL_AT: Final = 2
"""A stored track's first byte shifted right by this: how many of the history's newest points
the track is (nothing follows; 0: it is not)."""
_LONGEST_TAIL: Final = 0xFF >> _TAIL_AT


def _stored_track(track: bytes, history: bytes, no_fix: int) -> bytes:
    """A (non-empty) track as formats 7 and 8 store it: a byte that says how (`_TAIL_AT`,
    `_NEWEST_LEFT_OUT`, `_NO_FIX`), then its points whole but those the history holds. At a fix
    a minute the track is the history's newest points: 1 byte for 100; at one every 15 s it
    ends at the history's newest, 80 bytes."""
    if track[-_POINT_BYTES:] != history[-_POINT_BYTES:]:
        return bytes((no_fix,)) + track
    count = len(track) // _POINT_BYTES
    if count <= _LONGEST_TAIL and _ends_with(history, track):
        return bytes((count << _TAIL_AT | no_fix,))
    return bytes((_NEWEST_LEFT_OUT | no_fix,)) + track[:-_POINT_BYTES]


def _track_stored(stored: bytes, history: bytes) -> bytes:
    """The track `_stored_track` stored (`stored` not empty), against this history."""
    how = stored[0]
    if how >> _TAIL_AT:
        return _newest_points(history, how >> _TAIL_AT)
    if how & _NEWEST_LEFT_OUT:
        return stored[1:] + history[-_POINT_BYTES:]
    return stored[1:]


def encoded_device(device: DeviceState, buffer: bytearray, offset: int = 0) -> bytes:
    """The state as the shell stores it and the engine holds it between batches (format 8),
    encoded in `buffer` (reused: `encode_into` grows it once) from `offset` on, returned with
    the bytes before it (kept: the engine's record of a device begins with its rank). Without
    what it repeats: its id (empty: the key holds it), its fix when that is its track's newest
    point (nil: 1 byte for 52), of its track what its history holds (`_stored_track`), and its
    two times as steps from the fix's (`last_heard_ms` from its time, `last_ts` from its device
    time by the offset: 0, 1 byte for 9, at nearly every fix); and the seq window's gaps with
    seq 0's as a negative. `decoded_device` puts them back exactly. The state is changed while
    it is encoded, and back. A state whose steps leave msgpack's integers (times ~300 million
    years apart) or with a negative `unseen_below` (read as seq 0's gap) is stored whole: none
    the engine makes."""
    below = device.unseen_below
    if below < 0:
        return bytes(buffer[:offset]) + state_encoder.encode(device)
    device_id, fix, track = device.device_id, device.fix, device.packed_track
    last_ts, heard = device.last_ts, device.last_heard_ms
    device.device_id = ""
    zero_at = device.last_seq - 1
    if 0 <= zero_at < SEEN_WINDOW and below >> zero_at & 1:
        # Seq 0's gap: a device that counts from 1 leaves it for its first 64 messages, its
        # window's only gap, up to 9 bytes. Stored as the complement of the others, negative:
        # -1 (1 byte) when it is the only one.
        device.unseen_below = ~(below ^ 1 << zero_at)
    if fix is not None:
        ts = fix.ts
        if heard is not None:
            device.last_heard_ms = heard - ts
        clock_offset = device.clock_offset_ms
        if clock_offset is not None:
            device.last_ts = last_ts - (ts - clock_offset)
    if track:
        no_fix = 0
        if fix is None:
            no_fix = _NO_FIX
        elif _is_newest(fix, track):
            device.fix = None
        device.packed_track = _stored_track(track, device.packed_history, no_fix)
    try:
        _encode_into(device, buffer, offset)
        return bytes(buffer)
    except OverflowError:
        pass  # a step out of msgpack's range: stored whole, below
    finally:
        device.device_id, device.last_ts, device.last_heard_ms = device_id, last_ts, heard
        device.fix, device.packed_track, device.unseen_below = fix, track, below
    return bytes(buffer[:offset]) + state_encoder.encode(device)


def decoded_device(device_id: str, blob: bytes | memoryview) -> DeviceState:
    """The state stored under `device_id` in this format: exactly the state encoded, by
    `encoded_device` (what it left out put back) or whole (`state_encoder`: its id in it)."""
    device = _decode(blob)
    if device.device_id:
        return device
    _put_back_id_track_and_fix(device, device_id)
    if device.unseen_below < 0:  # seq 0's gap among others (`encoded_device`)
        device.unseen_below = ~device.unseen_below | 1 << (device.last_seq - 1)
    fix = device.fix
    if fix is not None:
        ts = fix.ts
        if device.last_heard_ms is not None:
            device.last_heard_ms += ts
        offset = device.clock_offset_ms
        if offset is not None:
            device.last_ts += ts - offset
    return device


def _put_back_id_track_and_fix(device: DeviceState, device_id: str) -> None:
    """What formats 7 and 8 leave out of a state but its times: its id, of its track what its
    history holds (`_track_stored`), its fix when that is its track's newest point."""
    device.device_id = device_id
    stored = device.packed_track
    if stored:
        track = device.packed_track = _track_stored(stored, device.packed_history)
        if device.fix is None and not stored[0] & _NO_FIX:
            device.fix = _newest_position(track)


def _from_format_7(device_id: str, state: msgspec.Struct) -> DeviceState:
    """Format 7 left out what format 8 does but the times: it stored them whole."""
    device = _from_format_5(state)
    if not device.device_id:
        _put_back_id_track_and_fix(device, device_id)
    return device


def _from_format_6(device_id: str, state: msgspec.Struct) -> DeviceState:
    """Format 6 left out the id and a fix that was the track's newest point (a byte after the
    track's points: no fix), and stored the track whole."""
    device = _from_format_5(state)
    if device.device_id:
        return device
    device.device_id = device_id
    track = device.packed_track
    if device.fix is None and track:
        if len(track) % _POINT_BYTES:
            device.packed_track = track[:-1]
        else:
            device.fix = _newest_position(track)
    return device


class _DeviceStateDecoder:
    """Decodes the current format (`decoded_device`), and the earlier ones (converted) for
    state written before."""

    def __init__(self) -> None:
        self._format_7 = _same_fields(7)
        self._format_6 = _same_fields(6)
        self._format_5 = _same_fields(5)
        self._format_4 = _same_fields(4)
        format_3 = _earlier_format("DeviceStateFormat3", _FORMAT_3_DIFFERS, array_like=True, tag=3)
        format_2 = _earlier_format("DeviceStateFormat2", _FORMAT_2_DIFFERS, array_like=True, tag=2)
        self._differs: dict[type[msgspec.Struct], Mapping[str, _Earlier]] = {
            format_3: _FORMAT_3_DIFFERS,
            format_2: _FORMAT_2_DIFFERS,
        }
        # Arrays are told apart by their first element, the format number (the struct's tag).
        self._arrays: msgspec.msgpack.Decoder[msgspec.Struct] = msgspec.msgpack.Decoder(
            self._format_7 | self._format_6 | self._format_5 | self._format_4 | format_3 | format_2
        )
        self._format_1: msgspec.msgpack.Decoder[msgspec.Struct] = msgspec.msgpack.Decoder(
            _earlier_format("DeviceStateFormat1", _FORMAT_1_DIFFERS)
        )

    def decode(self, device_id: str, blob: bytes) -> DeviceState:
        """The state stored under `device_id` (one of format 7 or earlier holds it too)."""
        try:
            return decoded_device(device_id, blob)
        except msgspec.ValidationError:
            pass  # not of this format
        if blob[:1] and blob[0] in _MAP_HEADERS:
            return _upgraded(self._format_1.decode(blob), _FORMAT_1_DIFFERS)
        state = self._arrays.decode(blob)
        if isinstance(state, self._format_7):
            return _from_format_7(device_id, state)
        if isinstance(state, self._format_6):
            return _from_format_6(device_id, state)
        if isinstance(state, self._format_5):
            return _from_format_5(state)
        if isinstance(state, self._format_4):
            return _from_format_4(state)
        return _upgraded(state, self._differs[type(state)])


def encode_pair(state: PairState) -> bytes:
    """The pair's state as the shell stores it (format `PAIR_FORMAT`)."""
    return state_encoder.encode(_StoredPair(*msgspec.structs.astuple(state)[_PAIR_IDS:]))


class _PairStateDecoder:
    """Decodes a stored pair state, of this format or format 1, under its key."""

    def __init__(self) -> None:
        self._stored = msgspec.msgpack.Decoder(_StoredPair)
        self._format_1 = msgspec.msgpack.Decoder(PairState)

    def decode(self, blob: bytes, key: PairKey) -> PairState:
        """`key`: the pair's ids, as its Redis key says them (format 1 holds its own)."""
        if blob[:1] and blob[0] in _MAP_HEADERS:
            return self._format_1.decode(blob)
        stored = self._stored.decode(blob)
        return PairState(*key, *msgspec.structs.astuple(stored))


device_state_decoder: Final = _DeviceStateDecoder()
pair_state_decoder: Final = _PairStateDecoder()
