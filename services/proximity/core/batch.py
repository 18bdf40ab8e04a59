"""One batch through the core: parse every message, apply its uplinks, then tick if due.

The proximity shell and the replay driver both call `run_batch`, so a replay runs exactly the
decisions the service made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Protocol, TypeVar

from nabij.contract import Topics
from nabij.failures import describe
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


def run_batch(
    engine: ProximityEngine,
    topics: Topics,
    batch: Sequence[M],
    now_ms: int,
    *,
    tick: bool,
) -> BatchResult[M]:
    result: BatchResult[M] = BatchResult()
    for item in batch:
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
        for uplink in parsed.uplinks:
            result.uplink_kinds.append(type(uplink).__name__)
            try:
                engine.apply(uplink, now_ms, result.effects)
            except Exception as err:  # a bug must not make this message a poison pill
                result.rejected.append((item, Rejection("internal_error", describe(err), None)))
    if tick:
        engine.tick(now_ms, result.effects)
    return result
