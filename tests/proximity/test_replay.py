"""`nabij record` log lines and `nabij replay`: determinism, what-if overrides, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nabij.config import ConfigError
from nabij.contract import Fix, encode
from services.cli import main
from services.proximity.core.engine import ProximityEngine
from services.replay.records import decode_lines, encode_line
from services.replay.timeline import replay
from services.replay.whatif import apply_overrides
from tests.scenarios.tracks import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
ORDERS = """
[[order]]
id = "O-1"
offender_device = "ank-0001"
victim_devices = ["vic-0001"]
alarm_m = 500
"""


def write_log(tmp_path: Path, scenario: str) -> tuple[Path, Path]:
    sc = load_scenario(SCENARIOS / scenario)
    log = tmp_path / "traffic.jsonl"
    lines = [encode_line(r.topic, r.payload, r.received_ms) for r in sc.records]
    lines.insert(3, "this is not json")
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = tmp_path / "config"
    config.mkdir()
    (config / "orders.toml").write_text(ORDERS, encoding="utf-8")
    return log, config


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["replay", *args]) == 0
    return capsys.readouterr().out


def replay_in_a_process(*args: str) -> subprocess.CompletedProcess[bytes]:
    code = "import sys; from services.cli import main; raise SystemExit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "replay", *args], capture_output=True, check=True, timeout=120
    )


def test_the_same_log_replays_to_byte_identical_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replaying one log in two separate processes prints the same bytes, in text and in JSON
    (no hash seed, set order or clock leaks in); unreadable lines are skipped and reported on
    stderr, never fatal."""
    log, config = write_log(tmp_path, "offender_approaches_victim.toml")
    for extra in ((), ("--json",)):
        first = replay_in_a_process(str(log), "--config", str(config), *extra)
        second = replay_in_a_process(str(log), "--config", str(config), *extra)
        assert first.stdout == second.stdout and b"proximity_alarm" in first.stdout
        assert b"skipped 1 unreadable lines" in first.stderr


def test_set_changes_the_outcome_as_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--set order.O-1.alarm_m=300` opens the alarm later (at ~300 m); a 200 m ring (which the
    walk stops at) never opens; `--set proximity.enter_dwell_s=0` opens it earlier."""
    log, config = write_log(tmp_path, "offender_approaches_victim.toml")

    def alarm_open_time(*sets: str) -> str | None:
        out = run(capsys, str(log), "--config", str(config), *[f"--set={s}" for s in sets])
        opened = [line for line in out.splitlines() if "open   proximity_alarm" in line]
        return opened[0][:23] if opened else None

    base = alarm_open_time()
    smaller = alarm_open_time("order.O-1.alarm_m=300")
    assert base is not None and smaller is not None and smaller > base
    assert alarm_open_time("order.O-1.alarm_m=150") is None
    quicker = alarm_open_time("proximity.enter_dwell_s=0")
    assert quicker is not None and quicker < base


@pytest.mark.parametrize(
    ("assignment", "path", "says"),
    [
        ("proximity.no_such=1", "proximity.no_such", "unknown key"),
        ("order.NOPE.alarm_m=3", "order.NOPE.alarm_m", "expected order.ID.KEY"),
        ("order.O-1.alarm_m=-5", "order.O-1.alarm_m", "greater than 0"),
    ],
)
def test_bad_overrides_are_config_errors_with_their_key(
    assignment: str, path: str, says: str
) -> None:
    """An unknown settings key, an unknown order or an invalid value is one problem, at that
    key path, saying what is wrong with it."""
    sc = load_scenario(SCENARIOS / "gps_jump.toml")
    with pytest.raises(ConfigError) as err:
        apply_overrides(sc.config, [assignment])
    ((problem),) = err.value.problems
    assert problem.path == path and says in problem.message


def test_a_record_that_trips_a_bug_is_set_aside_and_the_rest_replays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record that raises inside the engine is counted as rejected; the replay starts again
    without it, so no half-applied state leaks into the rest, which gives its alarms as usual."""
    sc = load_scenario(SCENARIOS / "offender_approaches_victim.toml")
    clean = replay(sc.config, sc.records)
    real_on_fix = ProximityEngine._on_fix
    poison = sc.records[0].payload

    def on_fix(self: ProximityEngine, fix: Fix, *rest: Any) -> None:
        real_on_fix(self, fix, *rest)  # the device, its rank, the time, the effects
        if encode(fix) == poison:
            raise ZeroDivisionError("after the state moved")

    monkeypatch.setattr(ProximityEngine, "_on_fix", on_fix)
    timeline = replay(sc.config, sc.records)
    assert timeline.rejected == clean.rejected + 1
    assert [line.signal for line in timeline.lines if line.signal][-3:] == [
        line.signal for line in clean.lines if line.signal
    ][-3:]


def test_log_lines_round_trip_text_and_binary_payloads() -> None:
    """UTF-8 payloads are stored as text, others as base64; both decode to the same bytes;
    broken lines are counted, not raised."""
    text = encode_line("nabij/v1/devices/a/fix", b'{"x": 1}', 5)
    binary = encode_line("nabij/v1/devices/a/fix", b"\xff\x00", 6)
    assert '"payload":"{\\"x\\": 1}"' in text and "payload_b64" in binary
    records, bad = decode_lines([text, binary, "{", '{"topic": 3}', ""])
    assert [r.payload for r in records] == [b'{"x": 1}', b"\xff\x00"] and bad == 2


def test_garbage_traffic_never_crashes_the_replay() -> None:
    """Invalid JSON, wrong topics, unknown devices and binary junk replay to rejections only."""
    sc = load_scenario(SCENARIOS / "gps_jump.toml")
    lines = [
        encode_line("nabij/v1/devices/ank-0001/fix", b"\xff\xfe", 1_767_600_000_000),
        encode_line("nabij/v1/devices/ank-0001/fix", b'{"lat": "x"}', 1_767_600_000_001),
        encode_line("elsewhere", b"{}", 1_767_600_000_002),
        encode_line("nabij/v1/devices/who/fix", b"[]", 1_767_600_001_000),
    ]
    records, _ = decode_lines(lines)
    timeline = replay(sc.config, records, tail_s=3)
    assert timeline.rejected == 4 and all(line.signal is None for line in timeline.lines)
