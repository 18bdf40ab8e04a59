"""`make demo` shows what the README promises, with no broker or Redis installed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_demo_shows_escalation_and_aware_press(tmp_path: Path) -> None:
    """The approach goes pre-alert, alarm, police; the aware press reaches police at once;
    the dispatcher's acknowledgements come back; the console starts with a login per role; the
    scenario that ends first raises no silence
    alarm; nothing leaves the embedded broker and store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NABIJ_")}
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--speed", "30"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = ANSI.sub("", result.stdout)
    assert result.returncode == 0, out + result.stderr
    lines = out.splitlines()

    def first(pattern: str) -> int:
        found = [i for i, line in enumerate(lines) if re.search(pattern, line)]
        assert found, f"no line matches {pattern!r}"
        return found[0]

    pre_alert = first(r"\[probation\] OPENED .* proximity_pre_alert")
    alarm = first(r"\[probation\] OPENED .* proximity_alarm")
    police = first(r"\[police   \] ESCALATED .* L2 proximity_alarm")
    assert pre_alert < alarm < police
    aware = first(r"\[police   \] OPENED .* P1 L1 aware_button")
    first(r"\[probation\] OPENED .* aware_button")  # asserts it is there
    assert not [line for line in lines if "location_unknown" in line], out
    assert aware < police
    assert first(r"ACKNOWLEDGED .* by demo-dispatcher") > police
    assert "embedded MQTT broker" in out and "embedded Redis-protocol store" in out
    console = first(r"dispatcher console on http://127\.0\.0\.1:\d+/ \(log in as probation: ")
    assert "police: police-demo / " in lines[console]
    assert (tmp_path / "var" / "demo" / "nabij.log").stat().st_size > 0
