"""One batch through the core: parse every message, apply its uplinks, then tick if due.

The proximity shell and the replay driver both call `run_batch`, so a replay runs exactly the
decisions the service made.

A message that trips a bug part-way through the engine leaves the engine's state half changed
(a counter moved, a position not): `run_batch` then raises `PoisonedInputError`, and the caller
rolls its engine back to the state before the batch (the shell reloads what it committed) and
runs the batch again without that message, which is dead-lettered (`run_isolating`). A bug in the
tick is handled alike: the batch runs again without the tick, and the result says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Protocol, TypeVar

from nabij.contract import DeviceEvent, Fix, Topics
from nabij.failures import NabijError, describe
from services.proximity.core.effects import Effects
from services.proximity.core.engine import ProximityEngine
from services.proximity.core.ingest import Rejection, parse_uplink

REFUSALS: Final = frozenset(
    {"invalid_json", "schema", "device_mismatch", "empty_batch", "batch_too_large"}
)
"""Rejections that leave a known device unheard: persisting, they raise its `device_fault`."""


class Message(Protocol):
    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


M = TypeVar("M", bound=Message)


@dataclass(slots=True)
class BatchResult(Generic[M]):
    effects: Effects = field(default_factory=Effects)
    rejected: list[tuple[M, Rejection]] = field(default_factory=list)
    uplink_kinds: list[str] = field(default_factory=list)
    """Type name of every accepted uplink, in order (for the shell's metrics)."""
    accepted: list[M] = field(default_factory=list)
    """Messages with at least one accepted uplink, in order (for the evidence trail)."""
    tick_failure: Rejection | None = None
    """Why the tick was left out (a bug in it); its changes were rolled back with the batch."""
    counted: set[str] = field(default_factory=set)
    """Devices with a counted message (fix or event) in the batch: each is told how far its
    messages are committed (`acks.committed_acks`)."""
    fix_times: list[int] = field(default_factory=list)
    """Device time of every accepted fix (decision latency from device time)."""


class PoisonedInputError(NabijError):
    """Message `index` of the batch (None: the tick) tripped a bug inside the engine: its state
    is suspect."""

    def __init__(self, index: int | None, rejection: Rejection) -> None:
        super().__init__(rejection.detail)
        self.index = index
        self.rejection = rejection


def run_batch(
    engine: ProximityEngine,
    topics: Topics,
    batch: Sequence[M],
    now_ms: int,
    *,
    tick: bool,
    broker_up: bool = True,
) -> BatchResult[M]:
    result: BatchResult[M] = BatchResult()
    effects, accepted, counted = result.effects, result.accepted, result.counted
    kinds, fix_times = result.uplink_kinds, result.fix_times
    for index, item in enumerate(batch):
        try:
            parsed = parse_uplink(topics, item.topic, item.payload, now_ms, engine.is_known)
        except RecursionError:  # msgspec's answer to absurdly deep nesting
            result.rejected.append((item, Rejection("invalid_json", "Nested too deeply.", None)))
            continue
        except Exception as err:  # a bug must not make this message a poison pill
            result.rejected.append((item, Rejection("internal_error", describe(err), None)))
            continue
        # Each step only when there is something to do: this runs for every message, and most
        # carry one fix and no rejection.
        rejections, uplinks = parsed.rejections, parsed.uplinks
        if rejections:
            result.rejected.extend((item, rejection) for rejection in rejections)
        try:
            for rejection in rejections:
                if rejection.device_id is not None and rejection.reason in REFUSALS:
                    engine.refused(rejection.device_id, rejection.reason, now_ms, effects)
            if not uplinks:
                continue
            accepted.append(item)
            if len(uplinks) > 1:
                fixes = [uplink for uplink in uplinks if isinstance(uplink, Fix)]
                if len(fixes) > 1:
                    engine.backlog(fixes, now_ms)
            for uplink in uplinks:
                kinds.append(type(uplink).__name__)
                if isinstance(uplink, Fix):
                    counted.add(uplink.device_id)
                    fix_times.append(uplink.ts)
                elif isinstance(uplink, DeviceEvent):
                    counted.add(uplink.device_id)
                engine.apply(uplink, now_ms, effects)
        except Exception as err:  # a bug must not make this message a poison pill
            raise _poisoned(index, err) from err
    if tick:
        try:
            engine.tick(now_ms, result.effects, broker_up=broker_up)
        except Exception as err:  # nor the tick a crash loop
            raise _poisoned(None, err) from err
    return result


def _poisoned(index: int | None, err: Exception) -> PoisonedInputError:
    return PoisonedInputError(index, Rejection("internal_error", describe(err), None))


def run_isolating(
    engine: ProximityEngine,
    rollback: Callable[[], ProximityEngine],
    topics: Topics,
    batch: Sequence[M],
    now_ms: int,
    *,
    tick: bool,
    broker_up: bool = True,
) -> tuple[ProximityEngine, BatchResult[M]]:
    """`run_batch`, setting aside each message that poisons the engine: `rollback()` returns an
    engine in the state before the batch. Returns the engine to go on with, and the result (with
    the poisoned messages among its rejections)."""
    items = list(batch)
    poisoned: list[tuple[M, Rejection]] = []
    tick_failure: Rejection | None = None
    while True:
        try:
            result = run_batch(engine, topics, items, now_ms, tick=tick, broker_up=broker_up)
        except PoisonedInputError as err:
            if err.index is None:
                tick, tick_failure = False, err.rejection
            else:
                poisoned.append((items.pop(err.index), err.rejection))
            engine = rollback()
            continue
        result.rejected.extend(poisoned)
        result.tick_failure = tick_failure
        return engine, result
