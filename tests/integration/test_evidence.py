"""The evidence trail end to end, on a real Mosquitto and Redis with both services running: an
approach, an acknowledgement and an order change are in an exported bundle that `nabij audit
verify` proves complete and unaltered with Redis stopped, and that honours the role."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nabij.contract import notice_decoder
from nabij.evidence.bundle import line_decoder
from nabij.evidence.chain import body_decoder, envelope_decoder
from services.cli import main
from tests.integration.conftest import StackFactory
from tests.integration.stack import VICTIM_HOME, Stack, north_of, wait_until
from tests.integration.test_live_orders import order_toml
from tests.roles import assert_probation_safe
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

STEP_MS = 10_000


def with_trail(make_stack: StackFactory, tmp_path: Path) -> Stack:
    """Order O1 (alarm 500 m), the evidence trail on with a key made at first start."""
    key_file = tmp_path / "keys" / "audit.key"
    return make_stack(order_toml("O1", 500, 1000), f'[audit]\nkey_file = "{key_file}"\n')


def audit(stack: Stack, *args: str) -> int:
    return main(["audit", *args, "--config", str(stack.config_dir)])


def verify_without_redis(bundle: Path) -> subprocess.CompletedProcess[str]:
    """`nabij audit verify` in a process of its own, told of no Redis or config."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "audit", "verify", str(bundle)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("NABIJ_")},
        check=False,
        timeout=60,
    )


def records(bundle: Path) -> list[tuple[str, str, bytes | None]]:
    """(writer, class, data) of every line; data None when withheld."""
    out = []
    for raw in (bundle / "records.jsonl").read_bytes().splitlines():
        line = line_decoder.decode(raw)
        envelope = envelope_decoder.decode(line.envelope)
        data = None if line.body is None else bytes(body_decoder.decode(line.body).data)
        out.append((envelope.writer, envelope.cls, data))
    return out


def test_an_approach_an_ack_and_an_order_change_export_and_verify_without_redis(
    make_stack: StackFactory, tmp_path: Path, redis_server: RedisServer
) -> None:
    key_file = tmp_path / "keys" / "audit.key"
    stack = make_stack(
        order_toml("O1", 500, 1000), extra_toml=f'[audit]\nkey_file = "{key_file}"\n'
    )
    stack.start_in_process()
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    ts = stack.clock()
    for _ in range(4):
        victim.fix(ts, VICTIM_HOME)
        offender.fix(ts, north_of(VICTIM_HOME, 200))
        ts += STEP_MS
    notices = stack.wait_notices(
        "probation", lambda ns: any(n.kind == "proximity_alarm" for n in ns), "alarm opened"
    )
    alarm_id = next(n.alarm_id for n in notices if n.kind == "proximity_alarm")
    ack = ["ack", alarm_id, "--by", "officer 17", "--note", "called him"]
    assert main([*ack, "--config", str(stack.config_dir)]) == 0
    changed = tmp_path / "orders-2.toml"
    changed.write_text(order_toml("O1", 300, 600), encoding="utf-8")
    apply = ["orders", "apply", str(changed), "--by", "judge-a", "--reason", "court 2026/99"]
    assert main([*apply, "--config", str(stack.config_dir)]) == 0
    wait_until(stack.inbox_settled, what="gateway applied every signal")
    stack.wait_applied("ank-1", offender.seq)

    police, probation = tmp_path / "police", tmp_path / "probation"
    export = ["export", "--order", "O1", "--by", "clerk 3"]
    assert audit(stack, *export, "--role", "police", "--out", str(police)) == 0
    assert audit(stack, *export, "--role", "probation", "--out", str(probation)) == 0
    stack.stop()
    redis_server.stop()

    for bundle in (police, probation):
        result = verify_without_redis(bundle)
        assert result.returncode == 0, result.stderr
        assert "complete and unaltered" in result.stdout

    full = [(writer, cls, data) for writer, cls, data in records(police) if data is not None]
    classes = {cls for _w, cls, _d in full}
    assert {"uplink", "decision", "notice", "request", "order", "export"} <= classes, classes
    uplinks = [data for _w, cls, data in full if cls == "uplink"]
    assert any(b"/devices/vic-1/fix" in d for d in uplinks)
    # Raw as received: the device's own time and counter, and nabij's receipt time.
    assert all(b'"ts":' in d and b'"seq":' in d and b'"received_ms":' in d for d in uplinks)
    requests = [data for _w, cls, data in full if cls == "request"]
    assert any(b'"by":"officer 17"' in d and b'"note":"called him"' in d for d in requests)
    orders = [data for _w, cls, data in full if cls == "order"]
    assert any(b'"by":"judge-a"' in d and b'"alarm_m"' in d for d in orders)
    exports = [data for _w, cls, data in full if cls == "export"]
    assert any(b'"by":"clerk 3"' in d and b'"role":"police"' in d for d in exports)

    shown = [(cls, data) for _w, cls, data in records(probation) if data is not None]
    assert not {cls for cls, _d in shown} & {"uplink", "decision"}
    victim_lat = f"{VICTIM_HOME[0]}".encode()
    for cls, data in shown:
        assert victim_lat not in data, (cls, data)
        if cls == "notice":
            assert data.startswith(b'{"queue":"probation"'), data
            notice = notice_decoder.decode(data.split(b'"notice":', 1)[1][:-1])
            assert_probation_safe(notice)


def test_a_tampered_export_fails_verification_naming_the_record(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    """The real CLI on a real bundle: one line removed is named, and the exit status is 1."""
    key_file = tmp_path / "audit.key"
    stack = make_stack(
        order_toml("O1", 500, 1000), extra_toml=f'[audit]\nkey_file = "{key_file}"\n'
    )
    stack.start_in_process()
    offender = stack.device("ank-1")
    ts = stack.clock()
    for n in range(3):
        offender.fix(ts + n * STEP_MS, north_of(VICTIM_HOME, 5000))
    stack.wait_applied("ank-1", offender.seq)
    bundle = tmp_path / "bundle"
    assert audit(stack, "export", "--order", "O1", "--by", "x", "--out", str(bundle)) == 0
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    lines = (tampered / "records.jsonl").read_bytes().splitlines(keepends=True)
    first_uplink = next(
        i
        for i, raw in enumerate(lines)
        if envelope_decoder.decode(line_decoder.decode(raw).envelope).cls == "uplink"
    )
    seq = envelope_decoder.decode(line_decoder.decode(lines[first_uplink]).envelope).seq
    del lines[first_uplink]
    (tampered / "records.jsonl").write_bytes(b"".join(lines))
    assert verify_without_redis(bundle).returncode == 0
    result = verify_without_redis(tampered)
    assert result.returncode == 1
    assert f"proximity: record seq {seq} removed" in result.stderr
