"""`DeviceModel`: one device's truth and its measurements of it, deterministic for a seed.

Pure: no transport, no threads. It knows where the device really is (route or GPX track), what
its receiver makes of that (GNSS, or a network fallback indoors), its battery and its clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from nabij.contract import DeviceEvent, EventType, Fix
from simulators import geo
from simulators.battery import Battery
from simulators.device_clock import ClockGlitch, ClockSkew
from simulators.movement import Route, State
from simulators.noise import NoiseParams
from simulators.positioning import Reading, Receiver, Sky


class DeviceModel:
    def __init__(
        self,
        device_id: str,
        route: Route,
        noise: NoiseParams,
        *,
        seed: int,
        battery: Battery | None = None,
        skew: ClockSkew | None = None,
        glitches: Sequence[ClockGlitch] = (),
    ) -> None:
        self.device_id = device_id
        self.route = route
        self.receiver = Receiver(noise, seed)
        self.noise = self.receiver.gnss
        # One counter for fixes and events, counting within one boot: nabij deduplicates
        # redeliveries on (boot, seq).
        self.seq = 0
        self.boot: str | None = None
        self.battery = battery if battery is not None else Battery(100.0, 0.0)
        self.skew = skew if skew is not None else ClockSkew()
        self._glitches = sorted(glitches, key=lambda g: g.at_s)

    def boot_as(self, boot: str | None) -> None:
        """A new run of the firmware: `boot` (None: old firmware without boot ids), seq from 0."""
        self.boot = boot
        self.seq = 0

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq += 1
        return seq

    def battery_at(self, t_s: float) -> int:
        return self.battery.at(t_s)

    def measure(self, t_s: float, sky: Sky = "open") -> tuple[State, Reading | None]:
        """The true state and the receiver's reading of it (None: no position at all)."""
        return self.route.at(t_s), self.receiver.sample(t_s, sky)

    @staticmethod
    def _position(truth: State, reading: Reading) -> tuple[float, float]:
        lat, lon = geo.offset(truth.lat, truth.lon, reading.east_m, reading.north_m)
        return round(lat, 7), round(lon, 7)

    def fix(self, t_s: float, true_ms: int, sky: Sky = "open") -> Fix | None:
        """A fix measured at `t_s` (true time `true_ms`), or None when nothing can be measured."""
        truth, reading = self.measure(t_s, sky)
        if reading is None:
            return None
        lat, lon = self._position(truth, reading)
        gnss = reading.src == "gnss" or sky == "open"
        moving = truth.speed_mps > 0
        ts = self.skew.stamp(true_ms, t_s)
        if self._glitches and t_s >= self._glitches[0].at_s:
            ts += round(self._glitches.pop(0).offset_s * 1000.0)
        return Fix(
            device_id=self.device_id,
            seq=self._next_seq(),
            ts=ts,
            lat=lat,
            lon=lon,
            acc=round(reading.acc_m, 1),
            src=reading.src,
            # Speed and course come from the GNSS Doppler: a network position has neither.
            speed=round(truth.speed_mps, 2) if gnss else None,
            heading=round(truth.heading_deg, 1) % 360.0
            if gnss and moving and truth.heading_deg is not None
            else None,
            batt=self.battery_at(t_s),
            boot=self.boot,
        )

    def event(
        self, event_type: EventType, t_s: float, true_ms: int, sky: Sky = "open"
    ) -> DeviceEvent:
        """An event carries the position of the moment when there is one, as a press must."""
        truth, reading = self.measure(t_s, sky)
        lat = lon = acc = None
        if reading is not None:
            lat, lon = self._position(truth, reading)
            acc = round(reading.acc_m, 1)
        return DeviceEvent(
            device_id=self.device_id,
            seq=self._next_seq(),
            ts=self.skew.stamp(true_ms, t_s),
            type=event_type,
            lat=lat,
            lon=lon,
            acc=acc,
            batt=self.battery_at(t_s),
            boot=self.boot,
        )
