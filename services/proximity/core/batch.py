"""One batch through the core: parse every message, apply its uplinks, then tick if due.

The proximity shell and the replay driver both call `run_batch`, so a replay runs exactly the
decisions the service made.

A message that trips a bug part-way through the engine leaves the engine's state half changed
(a counter moved, a position not): `run_batch` then raises `PoisonedInputError`, and the caller
rolls its engine back to the state before the batch (the shell reloads what it committed) and
runs the batch again without that message, which is dead-lettered (`run_isolating`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Protocol, TypeVar

from nabij.contract import Fix, Topics
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


class PoisonedInputError(NabijError):
    """Message `index` of the batch tripped a bug inside the engine: its state is suspect."""

    def __init__(self, index: int, rejection: Rejection) -> None:
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
) -> BatchResult[M]:
    result: BatchResult[M] = BatchResult()
    for index, item in enumerate(batch):
        try:
            parsed = parse_uplink(topics, item.topic, item.payload, now_ms, engine.is_known)
        except RecursionError:  # msgspec's answer to absurdly deep nesting
            result.rejected.append((item, Rejection("invalid_json", "Nested too deeply.", None)))
            continue
        except Exception as err:  # a bug must not make this message a poison pill
            result.rejected.append((item, Rejection("internal_error", describe(err), None)))
            continue
        result.rejected.extend((item, rejection) for rejection in parsed.rejections)
        for rejection in parsed.rejections:
            if rejection.device_id is not None and rejection.reason in REFUSALS:
                engine.refused(rejection.device_id, rejection.reason, now_ms, result.effects)
        if parsed.uplinks:
            result.accepted.append(item)
        fixes = [uplink for uplink in parsed.uplinks if isinstance(uplink, Fix)]
        if len(fixes) > 1:
            engine.backlog(fixes, now_ms)
        for uplink in parsed.uplinks:
            result.uplink_kinds.append(type(uplink).__name__)
            try:
                engine.apply(uplink, now_ms, result.effects)
            except Exception as err:  # a bug must not make this message a poison pill
                rejection = Rejection("internal_error", describe(err), None)
                raise PoisonedInputError(index, rejection) from err
    if tick:
        engine.tick(now_ms, result.effects)
    return result


def run_isolating(
    engine: ProximityEngine,
    rollback: Callable[[], ProximityEngine],
    topics: Topics,
    batch: Sequence[M],
    now_ms: int,
    *,
    tick: bool,
) -> tuple[ProximityEngine, BatchResult[M]]:
    """`run_batch`, setting aside each message that poisons the engine: `rollback()` returns an
    engine in the state before the batch. Returns the engine to go on with, and the result (with
    the poisoned messages among its rejections)."""
    items = list(batch)
    poisoned: list[tuple[M, Rejection]] = []
    while True:
        try:
            result = run_batch(engine, topics, items, now_ms, tick=tick)
        except PoisonedInputError as err:
            poisoned.append((items.pop(err.index), err.rejection))
            engine = rollback()
            continue
        result.rejected.extend(poisoned)
        return engine, result
