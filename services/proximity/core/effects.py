"""What the engine decided, for the shell to persist and perform."""

from __future__ import annotations

from dataclasses import dataclass, field

from nabij.contract import AlarmSignal, DeviceCommand
from services.proximity.core.state import PairKey


@dataclass(slots=True)
class Effects:
    """Accumulates over any number of `apply`/`tick` calls (one batch of the shell)."""

    signals: list[AlarmSignal] = field(default_factory=list)
    commands: list[tuple[str, DeviceCommand]] = field(default_factory=list)
    """(device_id, command)."""
    changed_devices: set[str] = field(default_factory=set)
    changed_pairs: set[PairKey] = field(default_factory=set)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    """(device_id, reason): duplicate, out_of_order, seq_jump, outlier or unknown_device."""
    events: list[str] = field(default_factory=list)
    """Type of every device event taken (a repeat is not), for the shell's counter."""
    platform_changed: bool = False
    """The platform watch's state changed (`platform.py`): the shell persists it."""
