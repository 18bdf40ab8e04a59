"""Scenario devices played on links that record what they publish (no broker)."""

from __future__ import annotations

import msgspec

from nabij.contract import DeviceEvent, Fix, event_decoder, fix_decoder
from simulators.firmware import Firmware
from simulators.runner import RunReport, Scenario, ScenarioRun, parse_scenario

START_MS = 1_780_000_000_000
batch_decoder = msgspec.json.Decoder(list[Fix])

BASE = """
name = "t"
duration_s = {duration}
seed = 9
[[order]]
id = "ORD-T"
offender_device = "ank-t"
victim_devices = ["vic-t"]
alarm_m = 500
[[device]]
id = "ank-t"
role = "offender"
interval_s = 10
route = [{{ lat = 52.40, lon = 4.90 }}]
{offender}
[[device]]
id = "vic-t"
role = "victim"
interval_s = 10
route = [{{ lat = 52.37, lon = 4.89 }}]
{victim}
{extra}
"""


class Wire:
    """A link that records publishes, drops and resumes, in order."""

    def __init__(self, firmware: Firmware, log: list[tuple[str, str, bytes]]) -> None:
        self.device_id = firmware.device_id
        self.log = log

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        kind = topic.rsplit("/", 1)[1]
        self.log.append((self.device_id, f"{kind}+retain" if retain else kind, payload))

    @property
    def connected(self) -> bool:
        return True

    def drop(self) -> None:
        self.log.append((self.device_id, "drop", b""))

    def resume(self) -> None:
        self.log.append((self.device_id, "resume", b""))

    def close(self, timeout_s: float) -> None:
        self.log.append((self.device_id, "close", b""))


def play(
    duration: float,
    offender: str = "",
    victim: str = "",
    extra: str = "",
    *,
    boot_token: str | None = "t",
) -> tuple[RunReport, list[tuple[str, str, bytes]]]:
    """Run the two-device scenario BASE with the given device keys and extra tables; returns
    the report and every (device, kind, payload) published, drops and resumes included."""
    text = BASE.format(duration=duration, offender=offender, victim=victim, extra=extra)
    return record(parse_scenario(text), boot_token=boot_token)


def record(
    scenario: Scenario, *, boot_token: str | None = "t"
) -> tuple[RunReport, list[tuple[str, str, bytes]]]:
    """Run `scenario` as fast as possible on recording links (device time from START_MS)."""
    log: list[tuple[str, str, bytes]] = []
    run = ScenarioRun(
        scenario,
        "mqtt://unused:1",
        "sim/t",
        speed=1e6,
        start_ms=START_MS,
        boot_token=boot_token,
        link_factory=lambda fw: Wire(fw, log),
    )
    return run.run(), log


def messages(log: list[tuple[str, str, bytes]], device: str) -> list[Fix | DeviceEvent]:
    out: list[Fix | DeviceEvent] = []
    for device_id, kind, payload in log:
        if device_id != device:
            continue
        if kind == "fix":
            decoded = msgspec.json.decode(payload)
            out.extend(
                batch_decoder.decode(payload)
                if isinstance(decoded, list)
                else [fix_decoder.decode(payload)]
            )
        elif kind == "event":
            out.append(event_decoder.decode(payload))
    return out
