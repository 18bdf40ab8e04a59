"""Live hand-over: an orders version moves devices from one running shard to another, and
nothing is lost, judged twice or told twice (docs/architecture.md, "Live hand-over").

Every shard steps through the orders versions one at a time, and for each step works out its
side (`core.shards.handover_plan`, pure). A step goes through three stages, each written in the
shard's `ShardKeys.handover` hash under the version it was done for, so the other shards (and
this shard's successor after a crash) know where it is:

1. `subscribed`: the shard has subscribed to the devices it takes over (the broker keeps their
   messages for its persistent session from the SUBACK on); what it reads of them is held
   (`Hold`), not judged, and not acknowledged.
2. `released`: once every destination has subscribed, the shard reads its bulk connection up
   to a barrier (everything published before the destinations subscribed is then in its
   intake), unsubscribes the leaving devices and reads up to a second barrier (no more of
   them come), judges what its lanes hold of them, and commits, fenced, its engine of the
   `interim` orders with the marker: the leaving devices' last state is in its keys and it
   never judges them again (orders that moved are dropped without a clear).
3. `adopted`: once every source has released, the shard reads the arriving devices' state and
   the moved orders' pair state from the sources' keys and their commands still in the
   sources' outboxes, and commits them into its own keys with its engine of the new orders and
   the marker, in one fenced commit; then it judges what it held (the sources' copies of those
   are duplicates by `seq`).

A step that moves nothing for a shard passes all three at once. Markers hold the highest
version done, so a shard that crashed restarts at its `adopted` version (or mid-step, after its
release) and carries on; a crashed source is waited for until it (its replacement) is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, cast

import redis
import structlog

from nabij import streams
from nabij.contract import DeviceCommand, Topics, command_decoder
from nabij.keys import Keys, Shard, ShardKeys
from services.proximity.core.shards import Handover, Ownership
from services.proximity.core.state import (
    DeviceState,
    PairState,
    device_state_decoder,
    pair_state_decoder,
)
from services.proximity.intake import Received
from services.proximity.layout import commands_for, pair_names, state_names, stored_state

Stage = Literal["subscribed", "released", "adopted"]
STAGES: Final[tuple[Stage, ...]] = ("subscribed", "released", "adopted")
PATIENCE_S: Final = 5.0
"""Wall seconds a step waits for other shards before it says so (`handover_waiting`)."""
_DEVICE_STATE: Final = ShardKeys("").device_state("")
"""How the name of a device's state begins after a shard's tag: the device id follows."""


def marks(client: redis.Redis, keys: Keys, shards: Iterable[Shard]) -> dict[int, dict[str, int]]:
    """Each shard's hand-over hash: shard index -> stage -> the version it was done for."""
    wanted = list(shards)
    pipe = client.pipeline(transaction=False)
    for shard in wanted:
        pipe.hgetall(keys.proximity(shard).handover)
    return {
        shard.index: {name.decode(): int(value) for name, value in raw.items()}
        for shard, raw in zip(wanted, pipe.execute(), strict=True)
    }


def behind(
    client: redis.Redis,
    keys: Keys,
    shards: Collection[Shard],
    *,
    stage: Stage,
    version: int,
) -> list[str]:
    """The `shards` that have not done `stage` for `version` yet."""
    found = marks(client, keys, shards)
    return sorted(str(s) for s in shards if found[s.index].get(stage, 0) < version)


def unapplied(client: redis.Redis, keys: Keys, shards: Collection[Shard]) -> list[str]:
    """The `shards` whose signal inbox still holds a signal the gateway has not applied (it
    deletes what it applied, and notes the newest id per inbox). A shard adopting alarms waits
    for their sources' (bounded, `PATIENCE_S`): the gateway reads the inboxes side by side, so
    its first signal of a moved alarm could otherwise overtake the source's last one."""
    inboxes = [keys.proximity(shard).gateway_inbox for shard in shards]
    pipe = client.pipeline(transaction=False)
    for inbox in inboxes:
        pipe.xrevrange(inbox, count=1)
    newest = cast(list[list[streams.StreamEntry]], pipe.execute())
    applied = cast(list[bytes | None], client.hmget(keys.applied_signals, inboxes))
    return [
        str(shard)
        for shard, last, done in zip(shards, newest, applied, strict=True)
        if last and streams.entry_order(last[0][0]) > streams.entry_order(done or b"0-0")
    ]


@dataclass(slots=True)
class Adoption:
    """What a shard takes over from the sources of a step."""

    devices: list[DeviceState]
    pairs: list[PairState]
    commands: list[tuple[str, DeviceCommand]]


def adoption(client: redis.Redis, keys: Keys, layout: int, plan: Handover) -> Adoption:
    """The arriving devices' state, the moved orders' pair state (as the sources last committed
    them) and the commands still in the sources' outboxes for the arriving devices."""
    devices: list[DeviceState] = []
    pairs: list[PairState] = []
    for source in sorted(plan.sources):
        adopted = plan.adopted.get(source, ())
        names = state_names(plan.incoming.get(source, ()), adopted)
        found, _held = stored_state(client, keys.proximity(Shard(source, layout)).tag, names)
        pair_of = pair_names(adopted)  # a stored pair holds no ids: its key says them
        for suffix, blob in found:
            if suffix.startswith(_DEVICE_STATE):
                devices.append(device_state_decoder.decode(suffix[len(_DEVICE_STATE) :], blob))
            else:
                pairs.append(pair_state_decoder.decode(blob, pair_of[suffix]))
    outboxes = [keys.proximity(Shard(k, layout)).command_outbox for k in sorted(plan.incoming)]
    arriving = plan.arriving
    commands = [
        (
            cast(bytes, fields[b"device"]).decode(),
            command_decoder.decode(cast(bytes, fields[b"command"])),
        )
        for fields in commands_for(client, outboxes, arriving.__contains__)
    ]
    return Adoption(devices, pairs, commands)


@dataclass(slots=True)
class Hold:
    """Between the intake and the engine while a step runs: messages of `arriving` devices wait
    here unacknowledged until the adoption (`release`); at most `limit` of them once this shard
    has released (`may_stall`), not before: until then other shards wait for its lanes to
    drain, so it must not stall (that lasts until the destinations have subscribed). Messages
    of `left` devices, another shard's now, are acknowledged unjudged."""

    topics: Topics
    limit: int
    arriving: frozenset[str] = frozenset()
    left: frozenset[str] = frozenset()
    held: list[Received] = field(default_factory=list)
    ready: list[Received] = field(default_factory=list)
    may_stall: bool = False
    """Set once this shard has released its side of the step: no other shard waits for its
    intake any more, so a full hold may stall it until the adoption."""
    told_full: bool = False

    @property
    def idle(self) -> bool:
        return not (self.arriving or self.left or self.held or self.ready)

    @property
    def full(self) -> bool:
        return self.may_stall and len(self.held) >= self.limit

    def sort(
        self, batch: list[Received], acknowledge: Callable[[list[Received]], None]
    ) -> list[Received]:
        """The part of `batch` to judge now, after what an adoption released."""
        ready, self.ready = self.ready, []
        if not (self.arriving or self.left):
            return ready + batch
        dropped: list[Received] = []
        for item in batch:
            split = self.topics.parse(item.topic)
            device = None if split is None else split[0]
            if device in self.arriving:
                self.held.append(item)
            elif device in self.left:
                dropped.append(item)
            else:
                ready.append(item)
        acknowledge(dropped)
        return ready

    def release(self) -> None:
        """The arriving devices are judged here now: what was held goes first."""
        self.ready, self.held, self.arriving = self.ready + self.held, [], frozenset()
        self.told_full = self.may_stall = False


@dataclass(slots=True)
class Step:
    """This shard's progress from its orders version to `version` (`plan`, `ownership`)."""

    version: int
    plan: Handover
    ownership: Ownership
    stage: Stage | None = None
    """The last stage done (None: none yet)."""
    subscriptions: tuple[int, ...] = ()
    """The readers' `subscribe` numbers of the arriving devices (bulk, fast)."""
    barrier: int | None = None
    """The bulk reader's barrier this shard waits for before its release (`passed`)."""
    unsubscribed: bool = False
    """The leaving devices are unsubscribed (after the first barrier, before the second)."""
    started_s: float = field(default_factory=time.monotonic)
    waiting_told: set[str] = field(default_factory=set)

    def patient(self) -> bool:
        """Whether the step has waited less than a hand-over takes when the shards run."""
        return time.monotonic() - self.started_s <= PATIENCE_S

    def tell_waiting(
        self,
        log: structlog.typing.FilteringBoundLogger,
        stage: Stage | Literal["gateway"],
        shards: list[str],
    ) -> None:
        """Log once per stage that the step waits for other shards, once it has waited longer
        than a hand-over takes when they run (`PATIENCE_S`)."""
        if stage not in self.waiting_told and not self.patient():
            self.waiting_told.add(stage)
            log.warning("handover_waiting", orders_version=self.version, until=stage, shards=shards)


def summary(plan: Handover) -> Mapping[str, object]:
    """A step's log fields: counts and shards only, never a position."""
    return {
        "devices_in": {str(k): len(v) for k, v in plan.incoming.items()},
        "devices_out": {str(k): len(v) for k, v in plan.outgoing.items()},
        "orders_moved_out": sorted(plan.moved),
        "orders_taken_over": sorted(o.id for v in plan.adopted.values() for o in v),
    }
