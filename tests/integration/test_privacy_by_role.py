"""PRIVACY through the real stack (Mosquitto, Redis, both services as processes): the attacker of
tests/privacy reads what the probation role can and fails; police-only data stays police-only;
retention deletes it. See docs/privacy.md."""

from __future__ import annotations

import math
import time
from typing import Any

import msgspec
import pytest

from nabij import streams
from nabij.contract import ResolveRequest
from services.alarm_gateway import operators
from services.cli import main
from tests.integration.conftest import StackFactory
from tests.integration.stack import VICTIM_HOME, Stack, wait_until
from tests.integration.test_alarm_path import STEP_MS, fast_escalation, kinds
from tests.privacy.attacker import Projection, attack
from tests.scenarios.tracks import offset

pytestmark = pytest.mark.integration
RINGS_M = {"alarm": 500.0, "pre_alert": 1000.0}
# Metres east and north of her: in from the north, round her east side to the south, out west.
APPROACH = [(0, 1500), (0, 1100), (0, 800), (0, 500), (100, 350), (250, 250), (300, 0)]
APPROACH += [(250, -200), (100, -300), (-150, -300), (-400, -200), (-900, 0), (-1500, 200)]
VICTIM_DIGITS = ("52.3788", "4.90005")  # VICTIM_HOME as any encoder prints it
Document = tuple[int, dict[str, Any]]


def _approach(stack: Stack, raw_commands: list[bytes]) -> None:
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    offender.client.message_callback_add(
        stack.topics.device("ank-1", "cmd"), lambda _c, _u, m: raw_commands.append(m.payload)
    )
    ts = stack.clock()
    for n, (east, north) in enumerate(APPROACH):
        victim.fix(ts, VICTIM_HOME)
        offender.fix(ts, offset(VICTIM_HOME, east, north))
        if n == 6:  # right beside her: his battery fails, she presses her button
            offender.event(ts + 1, "battery_low", batt=5)
            victim.event(ts + 2, "aware_button", lat=VICTIM_HOME[0], lon=VICTIM_HOME[1], acc=8)
        ts += STEP_MS
    stack.wait_notices(
        "police",
        lambda ns: (
            {"aware_button", "proximity_alarm"} <= set(kinds(ns, "escalated") + kinds(ns, "opened"))
        ),
        "aware press and escalated alarm at police",
    )
    stack.wait_notices(
        "probation", lambda ns: "battery_low" in kinds(ns, "opened"), "battery alarm"
    )


def _resolve(stack: Stack, kind: str) -> str:
    alarm_id = next(n.alarm_id for n in stack.notices("probation") if n.kind == kind)
    sent = operators.request(stack.redis, stack.keys, ResolveRequest, alarm_id, by="officer 7",
                             note=None, now_ms=stack.clock())  # fmt: skip
    outcome = operators.wait_outcome(stack.redis, stack.keys, sent.request_id, timeout_s=30)
    assert outcome is not None and outcome.status == "applied", outcome
    return alarm_id


def _stream_json(stack: Stack, key: str, field: bytes) -> list[Document]:
    return [
        (int(entry_id.split(b"-")[0]), msgspec.json.decode(fields[field]))
        for entry_id, fields in stack.redis.xrange(key)
    ]


def test_what_probation_reads_through_the_stack_does_not_locate_her(
    make_stack: StackFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """An approach with turns, a battery alarm and her press beside him, her press resolved:
    from the probation queue, the open and resolved records (raw, and as `nabij alarms` prints
    them) and the offender's commands, the attacker gets no annulus and guesses further from
    her than the 250 m band she was in; from the police queue (without even its victim field)
    it finds her within 5 m. Her position is in the police-only hash and no log line."""
    stack = make_stack(extra_toml=fast_escalation(ack_timeout_s=1))
    stack.start_process("proximity")
    stack.start_process("gateway")
    raw_commands: list[bytes] = []
    _approach(stack, raw_commands)
    pressed = _resolve(stack, "aware_button")
    assert main(["alarms", "--config", str(stack.config_dir)]) == 0
    printed = capsys.readouterr().out
    wait_until(
        lambda: any(b'"warn"' in p for p in raw_commands), what="warnings to the offender's device"
    )
    stack.stop_processes()  # every log line is written once the services have exited

    probation = _stream_json(stack, stack.keys.dispatch("probation"), b"notice")
    records = [
        (0, msgspec.json.decode(b)) for b in streams.hash_values(stack.redis, stack.keys.alarms)
    ]
    resolved = _stream_json(stack, stack.keys.resolved_alarms, b"alarm")
    commands = [(0, msgspec.json.decode(p)) for p in raw_commands]
    assert {d["alarm_id"] for _, d in resolved} == {pressed}
    project = Projection(round(VICTIM_HOME[0], 2), round(VICTIM_HOME[1], 2))
    truth = project(*VICTIM_HOME)

    def error(documents: list[Document]) -> float:
        verdict = attack(documents, project, RINGS_M)
        guesses = [math.hypot(e - truth[0], n - truth[1]) for e, n in verdict.estimates]
        return min(guesses, default=math.inf)

    probation_view = probation + records + resolved + commands
    assert attack(probation_view, project, RINGS_M).annuli == []
    assert error(probation_view) > 250
    police = _stream_json(stack, stack.keys.dispatch("police"), b"notice")
    assert error([(at, {**n, "victim": None}) for at, n in police]) < 5

    police_only = stack.redis.hget(stack.keys.police_facts, pressed) or b""
    assert all(d.encode() in police_only for d in VICTIM_DIGITS)
    readable = [printed, stack.logs()] + [
        msgspec.json.encode(d).decode() for _, d in probation_view
    ]
    for text in readable:
        assert not any(d in text for d in VICTIM_DIGITS), text[:300]


def test_retention_deletes_police_facts_and_old_police_notices(make_stack: StackFactory) -> None:
    """With retention limits of a second, a restarted gateway (which trims on start, then every
    minute) deletes the police facts of the resolved alarm and the police queue's old entries,
    and keeps the resolved record (365 days)."""
    privacy = "\n[privacy]\npolice_facts_retention_s = 1\npolice_queue_retention_s = 1\n"
    stack = make_stack(extra_toml=privacy)
    stack.start_process("proximity")
    stack.start_process("gateway")
    victim = stack.device("vic-1")
    victim.fix(stack.clock(), VICTIM_HOME)
    victim.event(stack.clock(), "aware_button", lat=VICTIM_HOME[0], lon=VICTIM_HOME[1], acc=8)
    stack.wait_notices("police", lambda ns: "aware_button" in kinds(ns, "opened"), "press")
    pressed = _resolve(stack, "aware_button")
    assert stack.redis.hexists(stack.keys.police_facts, pressed)
    resolved_at = stack.clock()
    wait_until(lambda: stack.clock() > resolved_at + 1000, what="police facts to expire")
    time.sleep(1.1)  # the police queue's limit is wall time (stream ids)
    stack.kill_process("gateway")
    stack.start_process("gateway")
    wait_until(lambda: not stack.redis.hexists(stack.keys.police_facts, pressed), what="trim")
    wait_until(lambda: stack.notices("police") == [], what="police queue trimmed")
    assert stack.redis.xlen(stack.keys.resolved_alarms) == 1
