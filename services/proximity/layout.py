"""A shard's place in the layout: its inbox registered with the gateway, and its state adopted
from the previous layout when the number of shards changed (a re-shard).

Each shard writes, in its first commit, when its layout (its N) took over the state
(`ShardKeys.layout_since`). A shard whose own mark is missing, or older than another layout's,
starts by adopting: it waits until no shard of the newest other layout holds its lease (those
processes have stopped), reads the device and pair state of the orders it now owns from the
shards that owned them there, and the commands still in their outboxes for its devices, and
commits all of it into its own keys with its mark, in one fenced commit. Nothing is deleted
from the old layout's keys: they are a copy nobody writes any more (`docs/architecture.md`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import redis
import structlog
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT

from nabij import streams
from nabij.keys import Keys, Shard, ShardKeys, UnshardedKeys
from nabij.orders import AnyOrder
from services.proximity.core.shards import Ownership, platform_judge
from services.proximity.core.state import PairKey
from services.shell.commit import Committer
from services.shell.lease import LeaseWaitAbortedError

# Layouts looked for when adopting: N from 1 to this.
MAX_SHARDS: Final = 16
LEASE_POLL_S: Final = 0.2
# The heartbeat name of the single proximity process of versions before shards.
UNSHARDED_SERVICE: Final = "proximity"


def register(client: redis.Redis, keys: Keys, shard: Shard) -> None:
    """Tell the gateway to read this shard's inbox (before the shard's first signal)."""
    client.sadd(keys.signal_inboxes, keys.proximity(shard).gateway_inbox)


def adopt_from_previous_layout(
    client: redis.Redis,
    keys: Keys,
    shard: Shard,
    orders: Sequence[AnyOrder],
    *,
    committer: Committer,
    stop: threading.Event,
    log: structlog.typing.FilteringBoundLogger,
    on_wait: Callable[[], None],
) -> None:
    """Make this shard's keys hold the current state of the orders it owns (see module doc);
    `on_wait` runs while it waits for the previous layout (keeps this shard's lease).

    Raises `LeaseWaitAbortedError` if `stop` is set while the previous layout still runs.
    """
    own = keys.proximity(shard)
    starts = _layout_starts(client, keys)
    mine = starts.get(shard.count, {}).get(shard.index)
    others = {count: max(marks.values()) for count, marks in starts.items() if count != shard.count}
    source = max(others, key=others.__getitem__, default=None)
    if mine is not None and (source is None or others[source] <= mine):
        return  # this shard's keys are the newest state
    now_ms = time.time_ns() // 1_000_000  # layouts are ordered by wall time, not nabij's clock
    ownership = Ownership(orders, shard)
    if source is not None:
        old = [keys.proximity(Shard(k, source)) for k in range(1, source + 1)]
        _wait_until_gone(client, [o.lease for o in old], stop=stop, log=log, on_wait=on_wait)
        states, devices = _owned_state(client, keys, ownership, source)
        outboxes, platform = [o.command_outbox for o in old], old[0].platform_state
    elif client.exists(keys.unsharded.proximity_devices):
        # Written by a version before shards. That process holds no lease: its heartbeat tells
        # when it has stopped.
        health = keys.health(UNSHARDED_SERVICE)
        _wait_until_gone(client, [health], stop=stop, log=log, on_wait=on_wait)
        states, devices = _unsharded_state(client, keys.unsharded, ownership)
        outboxes, platform = [keys.unsharded.command_outbox], keys.unsharded.platform_state
    else:
        states, devices, outboxes, platform = [], [], [], ""
    commands = commands_for(client, outboxes, ownership.owns_device)
    # The platform watch runs on shard 1 (`platform_judge`): its outage count goes on there.
    platform_state = client.get(platform) if platform and platform_judge(shard) else None

    def write(pipe: Pipeline) -> None:
        for suffix, blob in states:
            pipe.set(own.tag + suffix, blob)
        if devices:
            pipe.sadd(own.proximity_devices, *devices)
        for fields in commands:
            pipe.xadd(own.command_outbox, fields)
        if platform_state is not None:
            pipe.set(own.platform_state, platform_state)
        pipe.set(own.layout_since, now_ms)

    committer.commit(write, stop)
    if outboxes:
        log.info(
            "state_adopted",
            shard=str(shard),
            from_shards=source or "unsharded",
            states=len(states),
            commands=len(commands),
        )


def device_state_key(
    client: redis.Redis, keys: Keys, orders: Sequence[AnyOrder], device_id: str
) -> str:
    """Where a device's proximity state is now: in its shard of the newest layout (for readers
    outside the proximity service, e.g. the console)."""
    newest = {count: max(marks.values()) for count, marks in _layout_starts(client, keys).items()}
    count = max(newest, key=newest.__getitem__, default=1)
    index = Ownership(orders, Shard(1, count)).shard_of(device_id)
    return keys.proximity(Shard(index, count)).device_state(device_id)


def _layout_starts(client: redis.Redis, keys: Keys) -> dict[int, dict[int, int]]:
    """N -> K -> when shard K of N took over (only the shards that ever started)."""
    shards = [Shard(k, n) for n in range(1, MAX_SHARDS + 1) for k in range(1, n + 1)]
    pipe = client.pipeline(transaction=False)
    for shard in shards:
        pipe.get(keys.proximity(shard).layout_since)
    starts: dict[int, dict[int, int]] = {}
    for shard, since in zip(shards, pipe.execute(), strict=True):
        if since is not None:
            starts.setdefault(shard.count, {})[shard.index] = int(since)
    return starts


def _wait_until_gone(
    client: redis.Redis,
    alive: list[str],
    *,
    stop: threading.Event,
    log: structlog.typing.FilteringBoundLogger,
    on_wait: Callable[[], None],
) -> None:
    """Wait until none of the `alive` keys (the previous layout's leases or heartbeat) exists:
    none of its processes writes any more."""
    told = False
    while True:
        pipe = client.pipeline(transaction=False)
        for key in alive:
            pipe.exists(key)
        if not any(pipe.execute()):
            return
        if not told:
            log.warning("waiting_for_previous_layout_to_stop", alive=alive)
            told = True
        on_wait()
        if stop.wait(LEASE_POLL_S):
            raise LeaseWaitAbortedError("stopping while the previous layout still runs")


def _owned_state(
    client: redis.Redis, keys: Keys, ownership: Ownership, count: int
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The stored state of this shard's devices and pairs in the `count` layout: (key suffix
    after the tag, value) pairs, and the devices among them. One MGET per old shard (a slot)."""
    # (key suffix after the tag, the device when it is a device's state)
    wanted: dict[int, list[tuple[str, str | None]]] = {}
    for order in ownership.orders():
        old = ownership.shard_of_in(order.offender_device, count)
        ends = (order.offender_device, *order.victim_devices)
        wanted.setdefault(old, []).extend(state_names(ends, [order]))
    states: list[tuple[str, bytes]] = []
    devices_found: set[str] = set()
    for index, names in wanted.items():
        found, held = stored_state(client, keys.proximity(Shard(index, count)).tag, names)
        states += found
        devices_found |= held
    return states, sorted(devices_found)


def state_names(devices: Iterable[str], orders: Iterable[AnyOrder]) -> list[tuple[str, str | None]]:
    """The keys (suffix after a shard's tag) of these devices' and these orders' pairs' state,
    each with its device (None for a pair)."""
    names: list[tuple[str, str | None]] = [(ShardKeys("").device_state(d), d) for d in devices]
    names += [(suffix, None) for suffix in pair_names(orders)]
    return names


def pair_names(orders: Iterable[AnyOrder]) -> dict[str, PairKey]:
    """The keys (suffix after a shard's tag) of these orders' pairs' state, each with the
    pair's ids (which a stored pair state does not hold: `PAIR_FORMAT`)."""
    return {
        ShardKeys("").pair_state(order.offender_device, order.id, victim): (
            order.id,
            order.offender_device,
            victim,
        )
        for order in orders
        for victim in order.victim_devices
    }


def stored_state(
    client: redis.Redis, tag: str, names: list[tuple[str, str | None]]
) -> tuple[list[tuple[str, bytes]], set[str]]:
    """What a shard (its `tag`) holds of `names` (`state_names`), in one MGET: (suffix, value)
    pairs, and the devices whose state it holds."""
    unique = list(dict.fromkeys(names))
    blobs = streams.values(client, [tag + suffix for suffix, _device in unique])
    found = [(name, blob) for name, blob in zip(unique, blobs, strict=True) if blob is not None]
    states = [(suffix, blob) for (suffix, _device), blob in found]
    return states, {device for (_suffix, device), _blob in found if device is not None}


def _unsharded_state(
    client: redis.Redis, unsharded: UnshardedKeys, ownership: Ownership
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """As `_owned_state`, from the keys of a version before shards (each device's in its own
    slot: one pipelined GET each)."""
    names: list[tuple[str, str, str | None]] = []  # (old key, suffix after the new tag, device)
    for order in ownership.orders():
        for device in (order.offender_device, *order.victim_devices):
            names.append(
                (unsharded.device_state(device), ShardKeys("").device_state(device), device)
            )
        for victim in order.victim_devices:
            old = unsharded.pair_state(order.offender_device, order.id, victim)
            names.append(
                (old, ShardKeys("").pair_state(order.offender_device, order.id, victim), None)
            )
    unique = list(dict.fromkeys(names))
    pipe = client.pipeline(transaction=False)
    for old, _suffix, _device in unique:
        pipe.get(old)
    found = [(n, blob) for n, blob in zip(unique, pipe.execute(), strict=True) if blob is not None]
    states = [(suffix, blob) for (_old, suffix, _device), blob in found]
    return states, sorted({device for (_o, _s, device), _b in found if device is not None})


def commands_for(
    client: redis.Redis, outboxes: list[str], wanted: Callable[[str], bool]
) -> list[dict[FieldT, EncodableT]]:
    """Commands still in `outboxes` for the `wanted` devices, oldest first per outbox (a
    repeated command is harmless, a lost `warn` is not)."""
    commands: list[dict[FieldT, EncodableT]] = []
    for outbox in outboxes:
        for _id, fields in streams.entries(client, outbox):
            if wanted(fields[b"device"].decode()):
                commands.append({name: value for name, value in fields.items()})
    return commands
