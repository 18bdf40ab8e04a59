"""Who is paired with whom, and which zones bind whom: lookups built once from the orders."""

from __future__ import annotations

import functools
import math
import struct
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, cast, overload

import msgspec

from nabij.orders import AnyOrder, Zone
from nabij.settings import ProximitySettings
from services.proximity.core.cells import SnapGrid, offender_ring
from services.proximity.core.exemptions import Exemptions
from services.proximity.core.hysteresis import RingParams
from services.proximity.core.state import OUTSIDE, PairKey, PairState, RingState
from services.proximity.core.zones import ZoneSet

Role = Literal["offender", "victim"]
_NO_ZONES: Final[Mapping[str, ZoneSet]] = {}
NOT_OFFENDER: Final = -1
"""In `Topology.offender_ranks`: the device is offender in no order."""
_RANK: Final = "i"
"""`Topology.offender_ranks`' type code: a place in 32 bits, signed for `NOT_OFFENDER`."""
RANK_PREFIX: Final = struct.Struct("<I")
"""A device's record (`Topology.records`) begins with its rank, 32 bits unsigned."""
RANK_BYTES: Final = RANK_PREFIX.size
_rank_in: Final = RANK_PREFIX.unpack_from


@functools.cache
def victim_role(index: int) -> str:
    """The role of the order's `index`-th victim (0-based) in its alarm keys: "victim1", ...
    (one string per place, not one per pair)."""
    return f"victim{index + 1}"


@dataclass(frozen=True, slots=True)
class Membership:
    """One order a device belongs to, and its role there."""

    order_id: str
    offender_device: str
    role: Role


@dataclass(frozen=True, slots=True)
class Rings:
    """The two rings' parameters, and the offender's (judged on her grid cell: `cells`): one
    object for every pair of the same ring sizes, not four fields a pair."""

    pre_alert: RingParams
    alarm: RingParams
    offender_pre_alert: RingParams
    offender_alarm: RingParams


@dataclass(frozen=True, slots=True)
class PairTerms:
    """What a pair is judged by beside whom it joins: her role in the order's alarm keys
    (`victim_role`: her place in the order), the two rings' parameters, the order's exemptions.
    One object for every pair of the same three (`Topology.build`), not three fields a pair."""

    victim_role: str
    rings: Rings
    exemptions: Exemptions | None


RingStates = tuple[RingState, RingState, RingState, RingState]
_ALL_OUTSIDE: Final[RingStates] = (OUTSIDE, OUTSIDE, OUTSIDE, OUTSIDE)


class _RingOf:
    """One of a pair's four ring states (`PairSpec.ring_states`) as an attribute of its own."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    @overload
    def __get__(self, spec: None, owner: type) -> _RingOf: ...
    @overload
    def __get__(self, spec: PairSpec, owner: type) -> RingState: ...
    def __get__(self, spec: PairSpec | None, owner: type) -> RingState | _RingOf:
        return self if spec is None else spec.ring_states[self.index]

    def __set__(self, spec: PairSpec, state: RingState) -> None:
        states = list(spec.ring_states)
        states[self.index] = state
        # Back to the one tuple of four outside rings once all are (nearly every pair).
        all_outside = all(s is OUTSIDE for s in states)
        spec.ring_states = _ALL_OUTSIDE if all_outside else cast(RingStates, tuple(states))


class PairSpec(msgspec.Struct, gc=False):
    """A pair and its state in one record: who, what it is judged by (`terms`), then where the
    pair stands. One object with no key tuple (~200 bytes a pair less than a spec holding a
    `PairState` under a key), and six fields where it had twelve (the shared terms, the four
    rings' states in one tuple shared while all are outside, the exemption flag packed with the
    last comparison: 64 bytes, not 112: docs/benchmarks.md). Untracked by the collector
    (`gc=False`): nothing it holds refers back to it. Changed in place: its devices share it
    (`Topology.held`); its state is `PairState`'s, the rest never changes."""

    order_id: str
    offender: str
    victim: str
    terms: PairTerms
    ring_states: RingStates = _ALL_OUTSIDE
    """`pre_alert`, `alarm`, `offender_pre_alert`, `offender_alarm`, read and set as those: the
    offender's two are judged on her grid cell (`cells`): his warnings and interval."""
    observed: bytes | None = None
    """The last comparison: its time, distance and uncertainty, and whether it fell in an
    exemption window (`exempt`), packed (`_OBSERVED`; None before any and not exempt): one
    object where an int, two floats and a flag took ~100 bytes. Read them as `last_obs_ts`,
    `last_distance_m`, `last_uncertainty_m` and `exempt`; set them with `observe`."""

    pre_alert = _RingOf(0)
    alarm = _RingOf(1)
    offender_pre_alert = _RingOf(2)
    offender_alarm = _RingOf(3)

    @property
    def victim_role(self) -> str:
        return self.terms.victim_role

    @property
    def rings(self) -> Rings:
        return self.terms.rings

    @property
    def exemptions(self) -> Exemptions | None:
        return self.terms.exemptions

    @property
    def key(self) -> PairKey:
        """(order id, offender, victim): made when asked, not kept (64 bytes a pair)."""
        return (self.order_id, self.offender, self.victim)

    @property
    def last_obs_ts(self) -> int:
        """Device time of the newest comparison; never goes backwards."""
        observed = self.observed
        return 0 if observed is None else int(_OBSERVED.unpack_from(observed)[0])

    @property
    def last_distance_m(self) -> float | None:
        return self.last_comparison()[1]

    @property
    def last_uncertainty_m(self) -> float | None:
        return self.last_comparison()[2]

    @property
    def exempt(self) -> bool:
        """The last comparison fell in an exemption window (the tick re-checks when it ends)."""
        observed = self.observed
        return observed is not None and observed[_EXEMPT_AT] == 1

    @exempt.setter
    def exempt(self, exempt: bool) -> None:
        self.observed = _packed(*self.last_comparison(), exempt)

    def last_comparison(self) -> tuple[int, float | None, float | None]:
        """`last_obs_ts`, `last_distance_m` and `last_uncertainty_m`, unpacked at once."""
        if self.observed is None:
            return 0, None, None
        ts, distance_m, uncertainty_m, _ = _OBSERVED.unpack(self.observed)
        return ts, _figure(distance_m), _figure(uncertainty_m)

    def pair_time(self, ts: int) -> int:
        """The pair's time for a comparison of device time `ts`: it never goes backwards."""
        observed = self.observed
        return ts if observed is None else max(ts, _OBSERVED.unpack_from(observed)[0])

    def observe(self, t_ms: int, distance_m: float, uncertainty_m: float, exempt: bool) -> None:
        """Note a comparison at the pair's time `t_ms` (`pair_time`)."""
        self.observed = _OBSERVED.pack(t_ms, distance_m, uncertainty_m, exempt)

    def state(self) -> PairState:
        """Where the pair stands, as the shell stores it."""
        return PairState(
            self.order_id, self.offender, self.victim, self.pre_alert, self.alarm,
            *self.last_comparison(), self.exempt, self.offender_pre_alert, self.offender_alarm,
        )  # fmt: skip

    def restore(self, state: PairState | PairSpec) -> None:
        """Take the state of `state` (loaded, handed over, or a pair's start): its ids are
        not read, this record keeps its own."""
        if isinstance(state, PairSpec):
            self.ring_states, self.observed = state.ring_states, state.observed
            return
        self.pre_alert, self.alarm = state.pre_alert, state.alarm
        self.offender_pre_alert = state.offender_pre_alert
        self.offender_alarm = state.offender_alarm
        self.observed = _packed(
            state.last_obs_ts, state.last_distance_m, state.last_uncertainty_m, state.exempt
        )


_OBSERVED: Final = struct.Struct("<qdd?")
"""A pair's last comparison (`PairSpec.observed`): time, distance, uncertainty, exempt; a
figure it lacks as NaN (no comparison gives one; only a stored state may lack one)."""
_EXEMPT_AT: Final = _OBSERVED.size - 1


def _packed(
    ts: int, distance_m: float | None, uncertainty_m: float | None, exempt: bool
) -> bytes | None:
    if ts == 0 and distance_m is None and uncertainty_m is None and not exempt:
        return None  # never compared
    return _OBSERVED.pack(
        ts,
        math.nan if distance_m is None else distance_m,
        math.nan if uncertainty_m is None else uncertainty_m,
        exempt,
    )


def _figure(packed: float) -> float | None:
    return None if math.isnan(packed) else packed


@dataclass(frozen=True, slots=True)
class Topology:
    pairs: tuple[PairSpec, ...]
    """Every pair, in the order of the orders (found by key through its offender: `pair`)."""
    records: dict[str, bytes]
    """Device -> its record: its rank (`rank`) in `RANK_BYTES`, then its state as of the last
    freeze, encoded (nothing: never heard). `DeviceTable` writes the states; a rank is never
    rewritten. One object a device for both, where an int for the rank and a column of blobs
    took ~60-70 bytes a pair more (docs/benchmarks.md, the ninth pass)."""
    device_ids: list[str]
    """The keys of `records` by rank, the very strings: for what keeps devices by their place
    (`Agenda`) and hands them back by id."""
    held: tuple[PairSpec | tuple[PairSpec, ...], ...]
    """By rank (a device's place among the devices, in the order of the orders: its index in
    these columns, one column a fact, not a record a device; the tick looks at the devices due
    in this order, so it signals in the order a pass over every device did): every pair the
    device is in, as offender or victim; a device in one pair holds that pair itself, not a
    tuple of one (48 bytes a pair). Read through `pairs_of`."""
    offender_ranks: array[int]
    """By rank: its place among the offenders, in the order of the orders (`NOT_OFFENDER`:
    offender in none)."""
    victims: bytearray
    """By rank: 1 for a victim in some order."""
    other_orders: dict[int, tuple[str, ...]]
    """Rank -> the ids of every order the device is in, for the few whose pairs do not say so
    (an order with no pair of it, its own, as its offender: `orders`)."""
    zones: dict[str, ZoneSet]
    """Offender device -> its exclusion zones (only offenders with zones)."""
    exemptions: dict[str, Exemptions]
    """Order id -> its exemption windows (only orders that have some)."""

    def rank(self, device_id: str) -> int:
        """Its place among the devices (KeyError: none in force): unpacked from its record, so
        a caller that needs it more than once passes it along."""
        rank: int = _rank_in(self.records[device_id])[0]
        return rank

    def pairs_of(self, device_id: str) -> tuple[PairSpec, ...]:
        """Every pair the device is in, as offender or victim."""
        held = self.held[self.rank(device_id)]
        return held if isinstance(held, tuple) else (held,)

    def offender_rank(self, device_id: str) -> int | None:
        """Its place among the offenders (None: offender in none)."""
        rank = self.offender_ranks[self.rank(device_id)]
        return None if rank == NOT_OFFENDER else rank

    def is_victim(self, device_id: str) -> bool:
        """A victim in some order."""
        return bool(self.victims[self.rank(device_id)])

    def role(self, device_id: str) -> Role:
        """For reasons: a device that is offender in any order is called the offender device."""
        return "victim" if self.offender_rank(device_id) is None else "offender"

    def orders(self, device_id: str) -> tuple[str, ...]:
        """The ids of every order the device is in (its role and the offender there: its
        pairs, or, an order with no pair of it, its own, as its offender: `memberships`)."""
        rank = self.rank(device_id)
        listed = self.other_orders.get(rank)
        if listed is not None:
            return listed
        held = self.held[rank]
        if not isinstance(held, tuple):  # the common case (asked for every uplink's evidence)
            return (held.order_id,)
        return tuple(dict.fromkeys(spec.order_id for spec in held))

    def pair(self, key: PairKey) -> PairSpec | None:
        """The pair of `key`, among its offender's few: no dict by key (~110 bytes a pair with
        its key tuple)."""
        order_id, offender, victim = key
        if offender in self.records:
            for spec in self.pairs_of(offender):
                if (
                    spec.order_id == order_id
                    and spec.victim == victim
                    and spec.offender == offender
                ):
                    return spec
        return None

    def memberships(self, device_id: str) -> tuple[Membership, ...]:
        """Every order the device is in, and its role there (a device kind alarm is signalled
        per order). Made on demand: only a signal needs them."""
        # The offender of each of its orders, from its pairs there; none: an order with no
        # victim, whose offender it is.
        offenders = {spec.order_id: spec.offender for spec in self.pairs_of(device_id)}
        made = []
        for order_id in self.orders(device_id):
            offender = offenders.get(order_id, device_id)
            role: Role = "offender" if offender == device_id else "victim"
            made.append(Membership(order_id, offender, role))
        return tuple(made)

    @classmethod
    def build(
        cls,
        orders: Sequence[AnyOrder],
        settings: ProximitySettings,
        grid: SnapGrid,
        known_zones: Mapping[str, ZoneSet] = _NO_ZONES,
    ) -> Topology:
        """`known_zones`: the zone sets of the engine before a new version of the orders (same
        settings); an offender whose zones did not change keeps his, as projecting every zone
        again is most of the cost of a new version (docs/benchmarks.md)."""
        # The columns are filled as the orders name the devices (`_Columns`): no list of joins
        # a device, no dict of ranks beside `records`, which held ~675 bytes a pair at the
        # build's peak, and the process's resident memory keeps its peak (docs/benchmarks.md).
        pairs: list[PairSpec] = []
        columns = _Columns()
        zones_of: dict[str, list[tuple[str, Zone]]] = {}
        exemptions: dict[str, Exemptions] = {}
        # Orders share a few ring sizes: one (frozen) set of parameters per size, not per pair;
        # and pairs share their terms (`PairTerms`): one object per role, size and exemptions.
        sizes: dict[tuple[float, float], Rings] = {}
        terms: dict[tuple[str, Rings, Exemptions | None], PairTerms] = {}

        def rings_of(order: AnyOrder) -> Rings:
            size = (order.pre_alert_ring_m, order.alarm_m)
            if size not in sizes:
                pre_alert = RingParams.build("proximity_pre_alert", size[0], settings)
                alarm = RingParams.build("proximity_alarm", size[1], settings)
                sizes[size] = Rings(
                    pre_alert,
                    alarm,
                    *(offender_ring(p, grid.worst_error_m) for p in (pre_alert, alarm)),
                )
            return sizes[size]

        offenders = 0
        for order in orders:
            offender = order.offender_device
            rings = rings_of(order)
            exempt = Exemptions(order) if order.exemption else None
            if exempt is not None:
                exemptions[order.id] = exempt
            if order.zone:
                zones_of.setdefault(offender, []).extend((order.id, zone) for zone in order.zone)
            made = []
            for index, victim in enumerate(dict.fromkeys(order.victim_devices)):
                shared = (victim_role(index), rings, exempt)
                pair_terms = terms.get(shared)
                if pair_terms is None:
                    pair_terms = terms[shared] = PairTerms(*shared)
                made.append(PairSpec(order.id, offender, victim, pair_terms))
            specs = tuple(made)
            pairs.extend(specs)
            rank = columns.join(offender, specs)
            if columns.offender_ranks[rank] == NOT_OFFENDER:
                columns.offender_ranks[rank] = offenders
                offenders += 1
            for spec in specs:
                # A one-victim order's pairs are hers as well: the same tuple, not another.
                columns.victims[
                    columns.join(spec.victim, specs if len(specs) == 1 else (spec,))
                ] = 1
        records, offender_ranks = columns.records, columns.offender_ranks
        # Zones by offender in the order of the offenders (by the first order each is in).
        in_order = sorted(zones_of, key=lambda d: offender_ranks[_rank_in(records[d])[0]])
        return cls(
            pairs=tuple(pairs),
            records=records,
            device_ids=columns.device_ids,
            held=tuple(columns.held),
            offender_ranks=offender_ranks,
            victims=columns.victims,
            other_orders=_all_orders_of(columns.unsaid, orders, records),
            zones={d: _zone_set(d, zones_of[d], settings, known_zones) for d in in_order},
            exemptions=exemptions,
        )


class _Columns:
    """`Topology`'s columns by rank while it is built (`join`)."""

    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}
        self.device_ids: list[str] = []
        self.held: list[PairSpec | tuple[PairSpec, ...]] = []
        self.offender_ranks = array(_RANK)
        self.victims = bytearray()
        self.unsaid: set[int] = set()
        """Ranks of the devices in an order with no pair of them (its victimless offender)."""

    def join(self, device: str, specs: tuple[PairSpec, ...]) -> int:
        """The device's rank, its pairs `specs` added to those it holds (a new device: the next
        rank, in the order of the orders)."""
        record = self.records.get(device)
        if record is None:
            rank = len(self.device_ids)
            self.records[device] = RANK_PREFIX.pack(rank)
            self.device_ids.append(device)
            self.held.append(specs[0] if len(specs) == 1 else specs)
            self.offender_ranks.append(NOT_OFFENDER)
            self.victims.append(0)
        else:
            rank = _rank_in(record)[0]
            had = self.held[rank]
            both = (*(had if isinstance(had, tuple) else (had,)), *specs)
            self.held[rank] = both[0] if len(both) == 1 else both
        if not specs:
            self.unsaid.add(rank)
        return rank


def _all_orders_of(
    ranks: set[int], orders: Sequence[AnyOrder], records: Mapping[str, bytes]
) -> dict[int, tuple[str, ...]]:
    """Rank -> the ids of every order the device is in, in their order, for the devices of
    `ranks` (the few whose pairs do not name every order they are in)."""
    found: dict[int, list[str]] = {}
    if ranks:
        for order in orders:
            for device in (order.offender_device, *dict.fromkeys(order.victim_devices)):
                if (rank := _rank_in(records[device])[0]) in ranks:
                    found.setdefault(rank, []).append(order.id)
    return {rank: tuple(ids) for rank, ids in found.items()}


def _zone_set(
    device: str,
    zones: list[tuple[str, Zone]],
    settings: ProximitySettings,
    known: Mapping[str, ZoneSet],
) -> ZoneSet:
    reused = known.get(device)
    if reused is not None and reused.source == tuple(zones):
        return reused
    return ZoneSet(device, zones, settings)
