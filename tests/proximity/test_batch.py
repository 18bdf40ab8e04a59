"""One batch through the core: a message that trips a bug is set aside, the others go on."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from nabij.config import Order, ProximitySettings
from nabij.contract import Fix, Topics, encode
from services.proximity.core.batch import run_batch
from services.proximity.core.effects import Effects
from services.proximity.core.engine import ProximityEngine
from services.proximity.core.ingest import Uplink

TOPICS = Topics("nabij/v1")
T0 = 1_790_000_000_000


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes


def fix_message(device: str, seq: int) -> Message:
    fix = Fix(device, seq, T0 + seq * 1000, 52.37, 4.90, 5.0)
    return Message(TOPICS.device(device, "fix"), encode(fix))


def test_a_bug_on_one_message_rejects_it_and_spares_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception inside the engine becomes an `internal_error` rejection naming no values;
    the batch's other messages are applied."""
    order = Order(id="O-1", offender_device="ank-1", victim_devices=["vic-1"], alarm_m=500)
    engine = ProximityEngine([order], ProximitySettings())
    real_apply = engine.apply

    def apply(uplink: Uplink, now_ms: int, effects: Effects) -> None:
        if isinstance(uplink, Fix) and uplink.seq == 2:
            raise ZeroDivisionError("52.37 4.90")  # a message that quotes a position
        real_apply(uplink, now_ms, effects)

    monkeypatch.setattr(engine, "apply", apply)
    batch = [fix_message("ank-1", 1), fix_message("ank-1", 2), fix_message("vic-1", 3)]
    result = run_batch(engine, TOPICS, batch, T0 + 10_000, tick=False, max_clock_ahead_ms=60_000)
    ((message, rejection),) = result.rejected
    assert message is batch[1] and rejection.reason == "internal_error"
    assert "ZeroDivisionError" in rejection.detail and "52.37" not in rejection.detail
    assert engine.device("ank-1").last_seq == 1
    assert engine.device("vic-1").last_seq == 3
