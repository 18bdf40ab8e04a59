"""`nabij record` against a real Mosquitto, then `nabij replay` of what it wrote."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from services.cli import main
from tests.integration.conftest import StackFactory
from tests.integration.stack import VICTIM_HOME, north_of

pytestmark = pytest.mark.integration


def test_record_writes_what_devices_send_and_replay_reads_it(
    make_stack: StackFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Recorded lines hold topic, payload (text, or base64 for binary) and received time; the
    replay of the log opens the alarm the traffic implies and reports the binary junk only as
    a rejection."""
    stack = make_stack()
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    log = tmp_path / "traffic.jsonl"
    ts = int(time.time() * 1000)

    done = threading.Event()

    def publish() -> None:
        while not log.exists() or log.stat().st_size == 0:
            time.sleep(0.2)
            victim.fix(ts, VICTIM_HOME)  # until the recorder is surely subscribed
        offender.fix(ts + 1000, north_of(VICTIM_HOME, 50))
        offender.publish_raw("fix", b"\xff\x00junk")
        while not done.is_set():  # repeats (duplicates to the core) until --count is reached
            victim.fix(ts + 2000, VICTIM_HOME)
            time.sleep(0.1)

    sender = threading.Thread(target=publish, daemon=True)
    sender.start()
    assert main(["record", "--config", str(stack.config_dir), "--out", str(log), "--count", "12",
                 "--duration", "60"]) == 0  # fmt: skip
    done.set()
    sender.join(5)
    text = log.read_text(encoding="utf-8")
    assert '"payload_b64"' in text and '"received_ms"' in text and "ank-1/fix" in text
    capsys.readouterr()
    assert main(["replay", str(log), "--config", str(stack.config_dir)]) == 0
    out = capsys.readouterr().out
    assert "open   proximity_alarm" in out
