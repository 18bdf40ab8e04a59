"""Device firmware without a broker: coverage gaps, GNSS loss indoors, battery, power, vanish."""

from __future__ import annotations

import pytest

from nabij.contract import MAX_BACKLOG_FIXES, DeviceEvent, Fix
from tests.simulators.recording import START_MS, batch_decoder, messages, play


def test_coverage_gap_buffers_and_uploads_the_backlog_as_arrays_in_seq_order() -> None:
    """Out of coverage the device drops its connection, keeps measuring, and on return
    resumes and uploads everything (an event in the gap keeps its place): no seq missing."""
    report, log = play(
        600,
        offender="coverage_gaps = [{ from_s = 100, to_s = 400 }]",
        extra='[[event]]\nat_s = 205\ndevice = "ank-t"\ntype = "strap_tamper"',
    )
    mine = [(kind, payload) for device, kind, payload in log if device == "ank-t"]
    kinds = [kind for kind, _ in mine]
    drop, resume = kinds.index("drop"), kinds.index("resume")
    assert not {"fix", "event"} & set(kinds[drop + 1 : resume])
    after = mine[resume + 1 : resume + 4]
    assert [k for k, _ in after] == ["fix", "event", "fix"]  # array, tamper, array
    first, second = (batch_decoder.decode(p) for k, p in after if k == "fix")
    assert [f.ts for f in first] == [START_MS + t * 1000 for t in range(100, 201, 10)]
    assert len(second) == 19  # 210 .. 390 s: at 400 s coverage is back first
    seqs = [m.seq for m in messages(log, "ank-t")]
    assert seqs == list(range(len(seqs)))
    assert report.devices["ank-t"].seqs_sent == seqs
    assert report.devices["ank-t"].backlog_uploads == 2


def test_a_long_gap_is_uploaded_in_arrays_of_at_most_1000_fixes() -> None:
    """The contract caps a backlog array at 1000 fixes: a longer backlog is split."""
    _, log = play(30_000, offender="coverage_gaps = [{ from_s = 10, to_s = 25_000 }]")
    arrays = [
        batch_decoder.decode(p)
        for d, k, p in log
        if d == "ank-t" and k == "fix" and p.startswith(b"[")
    ]
    assert [len(a) for a in arrays] == [MAX_BACKLOG_FIXES, MAX_BACKLOG_FIXES, 499]


def test_indoors_the_device_reports_gnss_lost_wifi_positions_then_gnss_restored() -> None:
    """Entering a building: gnss_lost and wifi fixes (no speed); leaving: gnss_restored."""
    _, log = play(300, victim='indoors = [{ from_s = 100, to_s = 200, fallback = "wifi" }]')
    victim = messages(log, "vic-t")
    events = [(m.type, m.ts) for m in victim if isinstance(m, DeviceEvent)]
    assert events == [("gnss_lost", START_MS + 100_000), ("gnss_restored", START_MS + 200_000)]
    indoor = [
        m for m in victim if isinstance(m, Fix) and START_MS + 100_000 <= m.ts < START_MS + 200_000
    ]
    assert len(indoor) == 10 and {f.src for f in indoor} == {"wifi"}
    assert all(20.0 <= f.acc <= 50.0 and f.speed is None for f in indoor)


def test_no_sky_and_no_fallback_means_no_fixes_at_all() -> None:
    """`fallback = "none"`: the device stays silent about its position, not about events."""
    _, log = play(300, victim='indoors = [{ from_s = 100, to_s = 200, fallback = "none" }]')
    fixes = [m for m in messages(log, "vic-t") if isinstance(m, Fix)]
    assert not any(START_MS + 100_000 <= f.ts < START_MS + 200_000 for f in fixes)
    assert len(fixes) == 21  # 0 .. 300 s every 10 s, minus the 10 indoors


def test_battery_low_once_then_power_off_and_silence() -> None:
    """Draining: one battery_low at the threshold, power_off at 0 %, then nothing more."""
    _, log = play(3600, offender="battery_pct = 20\nbattery_drain_pct_per_h = 60")
    offender = messages(log, "ank-t")
    events = [m for m in offender if isinstance(m, DeviceEvent)]
    assert [e.type for e in events] == ["battery_low", "power_off"]
    assert events[0].batt == 15
    assert events[1].ts == START_MS + 1_200_000  # 20 % at 60 %/h lasts 20 minutes
    assert offender[-1] is events[1]
    assert ("ank-t", "close", b"") in log


def test_charging_clears_the_low_battery_reported_in_fixes() -> None:
    """On the charger the reported `batt` climbs again."""
    _, log = play(
        1800,
        victim="battery_pct = 20\nbattery_drain_pct_per_h = 60\n"
        "charging = [{ from_s = 600, to_s = 1800, pct_per_h = 120 }]",
    )
    batts = [m.batt for m in messages(log, "vic-t") if isinstance(m, Fix)]
    assert min(batts) == 10 and batts[-1] == 50


def test_vanish_drops_without_goodbye_and_revive_reconnects() -> None:
    """`vanish`: connection cut (will), no messages; `until_s`: back, fixes resume."""
    _, log = play(
        300,
        extra='[[action]]\nat_s = 100\ndevice = "vic-t"\ntype = "vanish"\nuntil_s = 200',
    )
    mine = [k for d, k, _ in log if d == "vic-t"]
    drop, resume = mine.index("drop"), mine.index("resume")
    assert "fix" not in mine[drop:resume] and "fix" in mine[resume:]
    ts = [m.ts for m in messages(log, "vic-t")]
    assert START_MS + 150_000 not in ts and START_MS + 250_000 in ts


def test_duplicates_repeat_a_message_with_the_same_seq() -> None:
    """`duplicate_rate`: some messages go out twice, byte for byte (a lost PUBACK)."""
    report, log = play(1000, offender="duplicate_rate = 0.2")
    payloads = [p for d, k, p in log if d == "ank-t" and k == "fix"]
    assert len(payloads) - len(set(payloads)) == report.devices["ank-t"].duplicates_sent > 0
    assert len(set(payloads)) == report.devices["ank-t"].fixes_sent


def test_clock_skew_shifts_timestamps() -> None:
    """A device clock 90 s behind stamps every message 90 s early."""
    _, log = play(100, offender="clock = { offset_s = -90 }")
    fixes = [m for m in messages(log, "ank-t") if isinstance(m, Fix)]
    assert fixes[0].ts == START_MS - 90_000


@pytest.mark.parametrize(
    ("snippet", "problem"),
    [
        ("coverage_gaps = [{ from_s = 10, to_s = 5 }]", "to_s"),
        ("coverage_gaps = [{ from_s = 0, to_s = 50 }, { from_s = 40, to_s = 60 }]", "overlap"),
        ('gpx = "missing.gpx"', "give either route or gpx"),
    ],
)
def test_bad_device_keys_are_reported(snippet: str, problem: str) -> None:
    """Invalid windows and a route given twice are scenario errors naming the key."""
    with pytest.raises(ValueError, match=problem):
        play(100, offender=snippet)
