"""Firmware starts and restarts (boot ids, seq), and the faults of clocks, presence and silence."""

from __future__ import annotations

import pytest

from nabij.contract import DeviceStatus, Fix, status_decoder
from simulators.scenario import ScenarioError
from tests.simulators.recording import START_MS, messages, play


def action(device: str, type_: str, at_s: float, **keys: float) -> str:
    """An [[action]] table for `play`'s `extra`."""
    lines = ["[[action]]", f"at_s = {at_s}", f'device = "{device}"', f'type = "{type_}"']
    lines.extend(f"{key} = {value}" for key, value in keys.items())
    return "\n".join(lines)


def test_every_message_of_a_run_carries_the_boot_id_and_seq_starts_at_0() -> None:
    """A run is one start of the firmware: one boot id on fixes and events, seq from 0."""
    _, log = play(100, extra='[[event]]\nat_s = 55\ndevice = "vic-t"\ntype = "aware_button"')
    victim = messages(log, "vic-t")
    assert {m.boot for m in victim} == {"t.1"}
    assert [m.seq for m in victim] == list(range(len(victim)))


def test_each_run_boots_with_a_new_boot_id() -> None:
    """Two runs of the same scenario do not share a boot id, so the second is no replay."""
    boots = [{m.boot for m in messages(play(30, boot_token=None)[1], "ank-t")} for _ in range(2)]
    assert len(boots[0]) == len(boots[1]) == 1
    assert boots[0] != boots[1]


def test_a_reboot_starts_a_new_boot_with_seq_0_and_keeps_the_connection() -> None:
    """`reboot`: the messages after it carry a new boot id and count from 0 again; the
    connection is not cut (no last will)."""
    report, log = play(200, extra=action("vic-t", "reboot", 95))
    victim = messages(log, "vic-t")
    before = [m for m in victim if m.ts < START_MS + 95_000]
    after = [m for m in victim if m.ts >= START_MS + 95_000]
    assert {m.boot for m in before} == {"t.1"} and {m.boot for m in after} == {"t.2"}
    assert [m.seq for m in before] == list(range(10))  # 0 .. 90 s
    assert [m.seq for m in after] == list(range(len(after)))
    assert ("vic-t", "drop", b"") not in log
    assert report.devices["vic-t"].seqs_sent == [m.seq for m in victim]


def test_old_firmware_sends_no_boot_id_but_still_restarts_its_seq() -> None:
    """`boot_id = false`: no boot field at all, and seq back to 0 after a reboot."""
    _, log = play(200, victim="boot_id = false", extra=action("vic-t", "reboot", 95))
    victim = messages(log, "vic-t")
    assert {m.boot for m in victim} == {None}
    assert [m.seq for m in victim][9:12] == [9, 0, 1]


def test_a_device_back_from_vanishing_boots_anew() -> None:
    """After `vanish` with `until_s` the device boots: new boot id, seq from 0."""
    _, log = play(300, extra=action("vic-t", "vanish", 100, until_s=200))
    victim = messages(log, "vic-t")
    late = [m for m in victim if m.ts >= START_MS + 200_000]
    assert {m.boot for m in late} == {"t.2"} and late[0].seq == 0


def test_a_glitch_stamps_one_fix_far_ahead_and_the_next_right_again() -> None:
    """`clock.glitches`: the first fix at or after at_s is stamped offset_s off, only that one."""
    _, log = play(200, offender="clock = { glitches = [{ at_s = 95, offset_s = 290 }] }")
    stamps = [m.ts - START_MS for m in messages(log, "ank-t") if isinstance(m, Fix)]
    assert stamps[9:12] == [90_000, 390_000, 110_000]
    assert sum(ts != k * 10_000 for k, ts in enumerate(stamps)) == 1


def test_flapping_presence_alternates_retained_offline_and_online_status() -> None:
    """`flap` 20 times in 60 s: 40 retained status messages, offline (as the will, no ts) then
    online (with the device's ts), every 1.5 s; fixes keep coming meanwhile."""
    _, log = play(200, extra=action("ank-t", "flap", 100, until_s=160, times=20))
    statuses = [
        status_decoder.decode(p) for d, k, p in log if d == "ank-t" and k == "status+retain"
    ]
    assert [s.online for s in statuses] == [False, True] * 20
    assert statuses[0] == DeviceStatus(online=False)
    online_ts = [s.ts for s in statuses if s.online]
    assert online_ts[0] == START_MS + 101_500 and online_ts[-1] == START_MS + 158_500
    fixes = [m for m in messages(log, "ank-t") if isinstance(m, Fix)]
    assert len(fixes) == 21  # 0 .. 200 s, none missed


def test_a_silent_device_stays_connected_and_sends_no_fixes_until_it_speaks() -> None:
    """`silence` 100-200 s: no fixes then (no drop, no will), fixes before and after."""
    _, log = play(300, extra=action("vic-t", "silence", 100, until_s=200))
    stamps = [m.ts - START_MS for m in messages(log, "vic-t")]
    assert not [ts for ts in stamps if 100_000 <= ts < 200_000]
    assert 90_000 in stamps and 200_000 in stamps and 300_000 in stamps
    assert not [k for d, k, _ in log if d == "vic-t" and k in {"drop", "resume"}]


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (action("vic-t", "reboot", 10, until_s=20), "a reboot takes no until_s"),
        (action("vic-t", "flap", 10), "flap needs until_s"),
        (action("vic-t", "vanish", 10, times=3), "times is for flap only"),
        (action("vic-t", "explode", 10), "type"),
    ],
)
def test_actions_that_make_no_sense_are_refused(table: str, problem: str) -> None:
    """A reboot with a duration, flapping without an end, `times` off a flap, an unknown type:
    scenario errors naming the action."""
    with pytest.raises(ScenarioError, match=problem) as err:
        play(100, extra=table)
    assert "action[0]" in str(err.value)
