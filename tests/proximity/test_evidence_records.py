"""The proximity service's evidence records name the orders each is about, as the engine of the
orders in force says: no map of its own (pure, no I/O)."""

from __future__ import annotations

from nabij.config import ProximitySettings
from nabij.contract import Topics, Warn
from services.proximity.core.engine import Effects, ProximityEngine
from services.proximity.evidence import BatchRecorder
from services.proximity.intake import Received
from tests.proximity import T0, order

ORDERS = [
    order("O-1", "ank-1", ["vic-1", "vic-1"]),  # a victim listed twice: one order, named once
    order("O-2", "ank-2", ["vic-1"]),
    order("O-3", "ank-3", []),  # no victim
]


def received(topics: Topics, device: str) -> Received:
    return Received(topics.device(device, "fix"), b"{}", 1, 1, T0, 1)


def test_every_record_names_the_orders_its_device_is_in_and_an_unknown_one_none() -> None:
    topics = Topics("nabij")
    engine = ProximityEngine(ORDERS, ProximitySettings())
    recorder = BatchRecorder(topics, engine.orders_of)
    effects = Effects(commands=[("ank-3", Warn("clear"))])
    accepted = [received(topics, d) for d in ("vic-1", "ank-1", "ank-3", "ank-9")]
    entries = recorder.entries(accepted, effects, T0)
    assert [entry.orders for entry in entries] == [
        ("O-1", "O-2"),
        ("O-1",),
        ("O-3",),
        (),
        ("O-3",),  # the command
    ]
