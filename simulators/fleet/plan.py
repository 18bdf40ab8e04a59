"""Who is in the fleet: N pairs (an ankle monitor and a victim device each) and their orders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Amsterdam, roughly the A10 ring and a bit beyond (south, west, north, east).
AMSTERDAM_BBOX: Final = (52.29, 4.76, 52.42, 5.00)


@dataclass(frozen=True, slots=True)
class FleetPlan:
    pairs: int
    interval_s: float
    seed: int = 1
    alarm_m: float = 500.0
    approaching: float = 0.0
    """Share of pairs whose offender heads for his victim again and again (the alarm path)."""
    bbox: tuple[float, float, float, float] = AMSTERDAM_BBOX

    def __post_init__(self) -> None:
        if self.pairs < 1 or self.pairs > 999_999:
            raise ValueError("pairs must be 1..999999")
        if not self.interval_s > 0:
            raise ValueError("interval_s must be positive")
        if not 0.0 <= self.approaching <= 1.0:
            raise ValueError("approaching must be a share, 0..1")

    @property
    def devices(self) -> int:
        return 2 * self.pairs

    @property
    def rate(self) -> float:
        """Fixes per second the fleet publishes (open loop)."""
        return self.devices / self.interval_s

    @property
    def approaching_pairs(self) -> int:
        """Pairs 0..approaching_pairs-1 approach: a stable, reproducible choice."""
        return round(self.approaching * self.pairs)

    def device_id(self, index: int) -> str:
        """Devices 0..pairs-1 are ankle monitors, pairs..2*pairs-1 their victims' devices."""
        if index < self.pairs:
            return f"ank-f{index:06d}"
        return f"vic-f{index - self.pairs:06d}"

    def orders_toml(self) -> str:
        """The fleet's orders as `orders.toml`: pair k is ank-fK with vic-fK."""
        blocks = [
            f'[[order]]\nid = "ORD-FLEET-{k:06d}"\noffender_device = "ank-f{k:06d}"\n'
            f'victim_devices = ["vic-f{k:06d}"]\nalarm_m = {self.alarm_m:g}\n'
            for k in range(self.pairs)
        ]
        return "\n".join(blocks)
