"""The scenario runner without a broker: simulated clock, timestamps, seq, commands."""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from collections.abc import Callable

import pytest

from nabij.clock import Timescale
from nabij.contract import DeviceEvent, Fix, SetInterval, Warn, encode, event_decoder, fix_decoder
from simulators.firmware import Firmware
from simulators.runner import ScenarioRun, load_scenario
from simulators.scheduler import SimClock

START_MS = 1_780_000_000_000
FAST = 1e6  # a whole scenario in milliseconds of wall time


PublishHook = Callable[[Firmware, str, bytes], None]


class RecordingLink:
    """Collects what a device publishes; `on_publish` lets a test answer like nabij would."""

    def __init__(
        self, firmware: Firmware, log: list[tuple[str, bytes]], on_publish: PublishHook | None
    ) -> None:
        self.firmware = firmware
        self.log = log
        self.on_publish = on_publish
        self.closed = False
        self.dropped = False

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.log.append((topic, payload))
        if self.on_publish is not None:
            self.on_publish(self.firmware, topic, payload)

    @property
    def connected(self) -> bool:
        return not self.dropped

    def drop(self) -> None:
        self.dropped = True

    def resume(self) -> None:
        self.dropped = False

    def close(self, timeout_s: float) -> None:
        self.closed = True


def _run(
    name: str,
    *,
    speed: float = FAST,
    on_publish: PublishHook | None = None,
    on_progress: Callable[[str], None] | None = None,
    progress_every_s: float = 60.0,
) -> tuple[ScenarioRun, list[tuple[str, bytes]], dict[str, RecordingLink]]:
    log: list[tuple[str, bytes]] = []
    links: dict[str, RecordingLink] = {}

    def factory(firmware: Firmware) -> RecordingLink:
        links[firmware.device_id] = RecordingLink(firmware, log, on_publish)
        return links[firmware.device_id]

    run = ScenarioRun(
        load_scenario(name),
        "mqtt://unused:1",
        "sim/test",
        speed=speed,
        start_ms=START_MS,
        boot_token="t",
        link_factory=factory,
        on_progress=on_progress,
        progress_every_s=progress_every_s,
    )
    return run, log, links


def _messages(log: list[tuple[str, bytes]]) -> dict[str, list[Fix | DeviceEvent]]:
    out: dict[str, list[Fix | DeviceEvent]] = defaultdict(list)
    for topic, payload in log:
        message = (
            fix_decoder.decode(payload) if topic.endswith("/fix") else event_decoder.decode(payload)
        )
        assert topic == f"sim/test/devices/{message.device_id}/{topic.rsplit('/', 1)[1]}"
        out[message.device_id].append(message)
    return out


def test_device_time_is_start_plus_simulated_time_at_any_speed() -> None:
    """Fixes are stamped start_ms + k * interval exactly, however fast the run goes."""
    run, log, links = _run("approach")
    report = run.run()
    scenario = run.scenario
    for device in scenario.device:
        fixes = [m for m in _messages(log)[device.id] if isinstance(m, Fix)]
        expected = [START_MS + k * device.interval_s * 1000 for k in range(len(fixes))]
        assert [f.ts for f in fixes] == expected
        assert len(fixes) == int(scenario.duration_s // device.interval_s) + 1
        assert report.fixes_sent[device.id] == len(fixes)
    assert all(link.closed for link in links.values())
    assert not report.stopped_early and report.sim_s == scenario.duration_s


def test_events_share_the_seq_counter_and_fire_at_their_time() -> None:
    """An event is stamped at its at_s and takes the next seq between the device's fixes."""
    run, log, _ = _run("aware")
    report = run.run()
    messages = _messages(log)["vic-sim-02"]
    assert [m.seq for m in messages] == list(range(len(messages)))
    assert [m.ts for m in messages] == sorted(m.ts for m in messages)
    (press,) = [m for m in messages if isinstance(m, DeviceEvent)]
    assert press.type == "aware_button" and press.ts == START_MS + 120_000
    assert press.lat is not None and press.acc is not None
    assert report.events_sent == {"ank-sim-02": 0, "vic-sim-02": 1}


def test_same_seed_same_run() -> None:
    """Two runs of a seeded scenario publish identical messages."""
    first, second = _run("wobble"), _run("wobble")
    first[0].run()
    second[0].run()
    assert first[1] == second[1]


def test_fixes_carry_noise_within_reason_and_motion() -> None:
    """Measured positions scatter around the truth; moving fixes carry speed and heading."""
    run, log, _ = _run("approach")
    run.run()
    fixes = [m for m in _messages(log)["ank-sim-01"] if isinstance(m, Fix)]
    assert all(f.src == "gnss" and f.acc == pytest.approx(6.0, abs=0.1) for f in fixes)
    moving = [f for f in fixes if f.speed]
    assert moving and all(f.heading is not None for f in moving)
    assert all(f.heading is None for f in fixes if not f.speed)


def test_set_interval_changes_the_fix_rhythm_and_warn_reaches_the_wearer() -> None:
    """Commands arriving mid-run are applied in order; fixes then follow the new interval."""
    sent: list[str] = []

    def nabij(firmware: Firmware, topic: str, payload: bytes) -> None:
        fix = fix_decoder.decode(payload)
        if firmware.device_id == "ank-sim-01" and fix.seq == 10 and not sent:
            sent.append("yes")
            firmware.receive(encode(SetInterval(seconds=15)))
            firmware.receive(encode(Warn(level="alarm")))
            firmware.receive(b'{"type": "reboot"}')

    run, log, _ = _run("approach", on_publish=nabij)
    report = run.run()
    ankle = run.devices["ank-sim-01"]
    assert report.commands_received["ank-sim-01"] == [SetInterval(15), Warn("alarm")]
    assert ankle.warnings == ["alarm"] and "leave now" in ankle.shown[0]
    assert ankle.rejected_commands == [b'{"type": "reboot"}']
    fixes = [m for m in _messages(log)["ank-sim-01"] if isinstance(m, Fix)]
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(fixes)]
    assert gaps[:10] == [30_000] * 10
    assert set(gaps[10:]) == {15_000}


def test_stop_event_ends_the_run_early() -> None:
    """A set stop event returns at once with a report that says so."""
    stop = threading.Event()
    stop.set()
    run, _, _ = _run("approach", speed=1.0)
    report = run.run(stop)
    assert report.stopped_early
    assert "stopped early" in str(report)


def test_progress_reports_true_distance_per_pair() -> None:
    """on_progress gets a line per pair every progress_every_s, plus one per scripted event."""
    lines: list[str] = []
    run, _, _ = _run("aware", on_progress=lines.append, progress_every_s=100.0)
    run.run()
    assert sum("ank-sim-02 is" in line for line in lines) == 3
    assert any("vic-sim-02 sends aware_button" in line for line in lines)


def test_sim_clock_runs_ahead_of_wall_time_by_the_speed_factor() -> None:
    """At speed N device time advances N ms per wall ms from start_ms."""
    wall = [100.0]
    clock = SimClock(10.0, start_ms=START_MS, monotonic=lambda: wall[0])
    assert clock.now_ms() == START_MS
    clock.start()
    wall[0] += 3.0
    assert clock.now_ms() == START_MS + 30_000
    with pytest.raises(ValueError):
        SimClock(0.0)


@pytest.mark.parametrize("speed", [1.0, 7.5, 100.0])
def test_devices_stamp_what_nabij_on_the_same_anchor_reads(speed: float) -> None:
    """A run anchored where nabij's clock is stamps scenario time 0 with nabij's time at the
    start, and later moments with nabij's time at those moments: the two clocks agree."""
    anchor = START_MS - 3_600_000  # the config was written an hour before the run
    nabij = Timescale(speed, anchor)
    wall_ms, mono = [START_MS], [50.0]
    clock = SimClock(speed, anchor_ms=anchor, monotonic=lambda: mono[0], wall_ms=lambda: wall_ms[0])
    clock.start()
    assert clock.start_ms == nabij.at(START_MS)
    for step_ms in (1, 250, 60_000):
        wall_ms[0] += step_ms
        mono[0] += step_ms / 1000
        assert abs(clock.now_ms() - nabij.at(wall_ms[0])) <= 1  # rounding only


def test_a_run_cannot_be_replayed() -> None:
    """A ScenarioRun is single-use (its devices' counters and clocks have moved on)."""
    run, _, _ = _run("aware")
    run.run()
    with pytest.raises(RuntimeError):
        run.run()
