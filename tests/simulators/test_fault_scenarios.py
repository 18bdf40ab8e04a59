"""The packaged fault scenarios do to the devices what their files say (no broker, no nabij):
what nabij should make of it is their `[[expect]]`, checked in test_scenarios_checked."""

from __future__ import annotations

from nabij.contract import DeviceEvent, Fix, fix_decoder
from simulators import geo
from simulators.runner import load_scenario
from tests.simulators.recording import START_MS, messages, record


def test_the_press_after_a_reboot_reuses_a_seq_the_device_sent_before() -> None:
    """victim_reboot_press: each press carries a seq its device already used before the reboot;
    the current firmware says so with a new boot id, the old firmware with nothing."""
    _, log = record(load_scenario("victim_reboot_press"))
    for device, boots in (("vic-sim-15", {"t.1", "t.2"}), ("vic-sim-16", {None})):
        sent = messages(log, device)
        (press,) = [m for m in sent if isinstance(m, DeviceEvent)]
        before = [m for m in sent if m.ts < START_MS + 300_000]
        assert press.seq in {m.seq for m in before}
        assert {m.boot for m in sent} == boots


def test_gap_breach_happens_entirely_inside_the_coverage_gap() -> None:
    """gap_breach: the offender's fixes inside the alarm ring (100 m) are all measured in the
    gap and reach the wire only in the backlog; every live fix is outside the pre-alert ring."""
    scenario = load_scenario("gap_breach")
    _, log = record(scenario)
    victim = scenario.device_by_id("vic-sim-17").route[0]
    gap = scenario.device_by_id("ank-sim-17").coverage_gaps[0]
    live = [
        fix_decoder.decode(p)
        for d, k, p in log
        if d == "ank-sim-17" and k == "fix" and not p.startswith(b"[")  # not a backlog array
    ]
    fixes = [m for m in messages(log, "ank-sim-17") if isinstance(m, Fix)]

    def metres(fix: Fix) -> float:
        assert victim.lat is not None and victim.lon is not None
        return geo.distance_m(fix.lat, fix.lon, victim.lat, victim.lon)

    inside = [f for f in fixes if metres(f) < 100]
    assert inside and all(
        START_MS + gap.from_s * 1000 <= f.ts < START_MS + gap.to_s * 1000 for f in inside
    )
    assert all(metres(f) > 200 for f in live)
    assert min(metres(f) for f in fixes) < 50


def test_one_fix_of_the_glitch_scenario_is_stamped_290_s_ahead() -> None:
    """clock_glitch: exactly one offender fix is off its measurement time, by +290 s."""
    _, log = record(load_scenario("clock_glitch"))
    fixes = [m for m in messages(log, "ank-sim-13") if isinstance(m, Fix)]
    offsets = [f.ts - (START_MS + k * 30_000) for k, f in enumerate(fixes)]
    assert sorted(set(offsets)) == [0, 290_000] and offsets.count(290_000) == 1
