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
from collections.abc import Callable, Sequence
from typing import Final

import redis
import structlog
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT

from nabij import streams
from nabij.commit import Committer
from nabij.keys import Keys, Shard, ShardKeys
from nabij.lease import LeaseWaitAbortedError
from nabij.orders import Order
from services.proximity.core.shards import Ownership

# Layouts looked for when adopting: N from 1 to this.
MAX_SHARDS: Final = 16
LEASE_POLL_S: Final = 0.2


def register(client: redis.Redis, keys: Keys, shard: Shard) -> None:
    """Tell the gateway to read this shard's inbox (before the shard's first signal)."""
    client.sadd(keys.signal_inboxes, keys.proximity(shard).gateway_inbox)


def adopt_from_previous_layout(
    client: redis.Redis,
    keys: Keys,
    shard: Shard,
    orders: Sequence[Order],
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
    if source is None:

        def mark(pipe: Pipeline) -> None:
            pipe.set(own.layout_since, now_ms)

        committer.commit(mark, stop)
        return
    _wait_until_stopped(client, keys, source, stop=stop, log=log, on_wait=on_wait)
    ownership = Ownership(orders, shard)
    states, devices = _owned_state(client, keys, ownership, source)
    commands = _owned_commands(client, keys, ownership, source)

    def write(pipe: Pipeline) -> None:
        for suffix, blob in states:
            pipe.set(own.tag + suffix, blob)
        if devices:
            pipe.sadd(own.proximity_devices, *devices)
        for fields in commands:
            pipe.xadd(own.command_outbox, fields)
        pipe.set(own.layout_since, now_ms)

    committer.commit(write, stop)
    log.info(
        "state_adopted",
        shard=str(shard),
        from_shards=source,
        states=len(states),
        commands=len(commands),
    )


def device_state_key(
    client: redis.Redis, keys: Keys, orders: Sequence[Order], device_id: str
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


def _wait_until_stopped(
    client: redis.Redis,
    keys: Keys,
    count: int,
    *,
    stop: threading.Event,
    log: structlog.typing.FilteringBoundLogger,
    on_wait: Callable[[], None],
) -> None:
    """Wait until no shard of the `count` layout holds its lease: none of them writes any more."""
    leases = [keys.proximity(Shard(k, count)).lease for k in range(1, count + 1)]
    told = False
    while True:
        pipe = client.pipeline(transaction=False)
        for lease in leases:
            pipe.exists(lease)
        if not any(pipe.execute()):
            return
        if not told:
            log.warning("waiting_for_previous_layout_to_stop", shards=count)
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
        devices = (order.offender_device, *order.victim_devices)
        names: list[tuple[str, str | None]] = [(ShardKeys("").device_state(d), d) for d in devices]
        names += [
            (ShardKeys("").pair_state(order.offender_device, order.id, v), None)
            for v in order.victim_devices
        ]
        wanted.setdefault(old, []).extend(names)
    states: list[tuple[str, bytes]] = []
    devices_found: set[str] = set()
    for index, names in wanted.items():
        tag = keys.proximity(Shard(index, count)).tag
        unique = list(dict.fromkeys(names))
        blobs = streams.values(client, [tag + suffix for suffix, _device in unique])
        for (suffix, device), blob in zip(unique, blobs, strict=True):
            if blob is not None:
                states.append((suffix, blob))
                if device is not None:
                    devices_found.add(device)
    return states, sorted(devices_found)


def _owned_commands(
    client: redis.Redis, keys: Keys, ownership: Ownership, count: int
) -> list[dict[FieldT, EncodableT]]:
    """Commands still in the `count` layout's outboxes for this shard's devices, oldest first
    per old shard (a repeated command is harmless, a lost `warn` is not)."""
    commands: list[dict[FieldT, EncodableT]] = []
    for index in range(1, count + 1):
        outbox = keys.proximity(Shard(index, count)).command_outbox
        for _id, fields in streams.entries(client, outbox):
            if ownership.owns_device(fields[b"device"].decode()):
                commands.append({name: value for name, value in fields.items()})
    return commands
