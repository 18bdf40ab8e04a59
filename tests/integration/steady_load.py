"""A steady load of simulated device firmware through a real broker into a running nabij.

Shared by the broker-crash fault test (`test_broker_crash.py`) and its measurement
(`bench/broker_kill.py`). Each pair's devices stand still, every pair far from the others; pair 0
stands 50 m apart (its proximity alarm opens at once), so a fault test also sees notices. One
thread drives every device's firmware (`simulators.firmware`, on a real `MqttLink` under its own
broker identity): a fix per device every `step_s` of nabij's clock. Orders as
`bench.pipeline.orders_toml` writes them (`O{i}`: `ank-{i}` and `vic-{i}`, alarm ring 500 m).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from services.proximity.core.state import SEEN_WINDOW
from services.shell.mqtt import MqttEndpoint
from simulators.firmware import AnkleMonitor, Behaviour, Firmware, VictimDevice
from simulators.link import MqttLink
from simulators.model import DeviceModel
from simulators.movement import Route, Waypoint
from simulators.noise import NoiseParams
from tests.integration.stack import VICTIM_HOME, Stack, north_of

STILL_S = 1e9
CONNECT_TIMEOUT_S = 15.0


def _still(device_id: str, where: tuple[float, float], seed: int) -> DeviceModel:
    route = Route([Waypoint(where[0], where[1], dwell_s=STILL_S)])
    return DeviceModel(device_id, route, NoiseParams(sigma_m=0.5), seed=seed)


@dataclass
class SteadyLoad:
    stack: Stack
    pairs: int
    behaviour: Behaviour
    step_s: float = 2.0
    """nabij seconds between two fixes of one device."""
    devices: list[Firmware] = field(default_factory=list)
    steps: int = 0
    presses: dict[str, list[int]] = field(default_factory=dict)
    """Presses sent, by device: their seqs move no counter at nabij (see `missing`)."""
    _to_press: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t_s: float = 0.0

    def connect(self) -> None:
        for i in range(self.pairs):
            home = (VICTIM_HOME[0] + i * 0.05, VICTIM_HOME[1])
            offender_at = north_of(home, 50 if i == 0 else 20_000)
            for cls, device_id, where in (
                (VictimDevice, f"vic-{i}", home),
                (AnkleMonitor, f"ank-{i}", offender_at),
            ):
                firmware: Firmware = cls(
                    _still(device_id, where, seed=i),
                    self.stack.topics,
                    round(self.step_s),
                    now_ms=self.stack.clock,
                    behaviour=self.behaviour,
                    boot_token=f"load-{time.monotonic_ns()}",
                )
                endpoint = MqttEndpoint.from_url(self.stack.device_url(device_id))
                link = MqttLink(endpoint, firmware)
                firmware.link = link
                link.start()
                self.devices.append(firmware)
        for firmware in self.devices:
            assert isinstance(firmware.link, MqttLink)
            assert firmware.link.wait_connected(CONNECT_TIMEOUT_S), firmware.device_id

    def start(self, steps: int) -> None:
        """Drive `steps` fixes per device on a thread of its own (`wait` for them), then keep the
        firmware re-sending what nabij has not confirmed until `close`."""
        self._thread = threading.Thread(target=self._run, args=(steps,), daemon=True)
        self._thread.start()

    def wait(self) -> None:
        self._done.wait()

    def wait_done(self) -> bool:
        """Whether every step has been driven."""
        return self._done.is_set()

    def _run(self, steps: int) -> None:
        wall_step_s = self.stack.config.settings.clock.timescale().wall_s(self.step_s)
        for _ in range(steps):
            if self._stop.is_set():
                return
            self._t_s += self.step_s
            true_ms = self.stack.clock()
            for firmware in self.devices:
                firmware.tick(self._t_s, true_ms)
                if firmware.device_id in self._to_press:
                    self._to_press.remove(firmware.device_id)
                    event = firmware.send_event("aware_button", self._t_s, true_ms)
                    assert event is not None
                    self.presses.setdefault(firmware.device_id, []).append(event.seq)
            self.steps += 1
            time.sleep(wall_step_s)
        self._done.set()
        while not self._stop.wait(wall_step_s):  # no new fixes, but firmware still re-sends
            for firmware in self.devices:
                firmware.resend_if_overdue()

    def press(self, device_id: str) -> None:
        """The victim presses her alarm button at the next step (the driving thread owns the
        firmware)."""
        self._to_press.append(device_id)

    def wait_steps(self, steps: int) -> None:
        """Until the load has driven `steps` steps in all."""
        while self.steps < steps and not self._done.is_set():
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for firmware in self.devices:
            if firmware.link is not None:
                firmware.link.close(timeout_s=1.0)

    def missing(self) -> dict[str, list[int]]:
        """Per device, the seqs it sent that nabij's committed state does not account for (taken,
        or a repeat of one taken). A press moves no counter, so its seq is left out here: its
        notice accounts for it."""
        out: dict[str, list[int]] = {}
        for firmware in self.devices:
            sent = [
                s for s in firmware.seqs_sent if s not in self.presses.get(firmware.device_id, [])
            ]
            assert len(sent) <= SEEN_WINDOW, "the seen-seq window cannot account for more"
            state = self.stack.device_state(firmware.device_id)
            lost = [
                s
                for s in sent
                if state is None
                or state.boot != firmware.model.boot
                or s > state.last_seq
                or not state.seq_seen(s)
            ]
            if lost:
                out[firmware.device_id] = lost
        return out

    def sent(self) -> int:
        return sum(len(f.seqs_sent) for f in self.devices)
