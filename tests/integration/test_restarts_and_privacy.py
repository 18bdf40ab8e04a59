"""Services as real `nabij` processes: kill -9 loses nothing, and no victim position leaks."""

from __future__ import annotations

import random

import msgspec
import pytest

from nabij.contract import Warn, encode
from services.proximity.core.state import DeviceState
from tests.integration.conftest import StackFactory
from tests.integration.stack import VICTIM_HOME, north_of, wait_until
from tests.integration.test_alarm_path import fast_escalation, kinds, walk
from tests.servers import RedisServer

pytestmark = pytest.mark.integration
# Long enough that the kill surely lands before the escalation is due, on a slow machine too.
ACK_TIMEOUT_S = 6


def test_gateway_kill9_keeps_open_alarm_and_fires_escalation_due_while_down(
    make_stack: StackFactory,
) -> None:
    """An escalation that fell due while the gateway was dead fires once it is back, once."""
    stack = make_stack(extra_toml=fast_escalation(ack_timeout_s=ACK_TIMEOUT_S))
    stack.start_process("proximity")
    stack.start_process("gateway")
    walk(stack.device("ank-1"), stack.device("vic-1"), stack.clock(), [50])
    probation = stack.wait_notices(
        "probation", lambda ns: "proximity_alarm" in kinds(ns, "opened"), "alarm opened"
    )
    stack.kill_process("gateway")
    escalation_due = next(n.at for n in probation if n.event == "opened") + ACK_TIMEOUT_S * 1000
    wait_until(lambda: stack.clock() > escalation_due + 500, what="escalation to fall due")
    assert stack.notices("police") == []
    stack.start_process("gateway")
    police = stack.wait_notices("police", bool, "escalation after restart")
    assert police[0].event == "escalated" and police[0].kind == "proximity_alarm"
    assert police[0].level == 2
    opened = [n for n in stack.notices("probation") if n.event == "opened"]
    assert [n.kind for n in opened].count("proximity_alarm") == 1


def test_proximity_kill9_keeps_pair_state_and_queued_fixes(make_stack: StackFactory) -> None:
    """After kill -9 the pair is still inside (no second alarm) and fixes sent meanwhile count."""
    stack = make_stack()
    stack.start_process("gateway")
    stack.start_process("proximity")
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    ts = walk(offender, victim, stack.clock(), [50])
    stack.wait_notices("probation", lambda ns: "proximity_alarm" in kinds(ns, "opened"), "opened")
    stack.kill_process("proximity")
    # Published while proximity is dead: the broker keeps them for its persistent session.
    ts = walk(offender, victim, ts, [60, 55])
    walk(offender, victim, ts, [3000] * 9)  # away for 90 s of device time: beyond exit dwell
    stack.start_process("proximity")
    probation = stack.wait_notices(
        "probation", lambda ns: "proximity_alarm" in kinds(ns, "cleared"), "alarm cleared"
    )
    assert kinds(probation, "opened").count("proximity_alarm") == 1
    alarm_ids = {n.alarm_id for n in probation if n.kind == "proximity_alarm"}
    assert len(alarm_ids) == 1


def test_victim_position_never_reaches_probation_offender_or_logs(make_stack: StackFactory) -> None:
    """Across an approach with escalation and an aware press, the victim's coordinates appear
    only in police notices: not in probation notices, not on the offender's command topic, and
    not in any log line of either service."""
    stack = make_stack(extra_toml=fast_escalation(ack_timeout_s=1))
    stack.start_process("proximity")
    stack.start_process("gateway")
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    raw_commands: list[bytes] = []
    offender.client.message_callback_add(
        stack.topics.device("ank-1", "cmd"), lambda _c, _u, m: raw_commands.append(m.payload)
    )
    ts = walk(offender, victim, stack.clock(), [1500, 900, 600, 400, 300, 300, 300])
    victim.event(ts, "aware_button", lat=VICTIM_HOME[0], lon=VICTIM_HOME[1], acc=8.0)
    stack.wait_notices(
        "police",
        lambda ns: {"aware_button", "proximity_alarm"} <= {n.kind for n in ns},
        "aware and escalated alarm at police",
    )
    wait_until(
        lambda: any(b'"warn"' in p for p in raw_commands), what="warnings to the offender's device"
    )
    stack.stop_processes()  # every log line is written once the services have exited
    victim_digits = ["52.3788", "4.90005"]  # VICTIM_HOME, as any encoder would print it
    police = stack.notices("police")
    assert any(n.victim is not None for n in police)
    for notice in stack.notices("probation"):
        assert notice.victim is None
    for payload in raw_commands:
        assert not any(d.encode() in payload for d in victim_digits), payload
        assert b"lat" not in payload and b"lon" not in payload
    logs = stack.logs()
    assert "signal" in logs and "notice" in logs  # the services did log at debug level
    for digits in victim_digits:
        assert digits not in logs
    offender_near = north_of(VICTIM_HOME, 300)
    assert f"{offender_near[0]:.4f}" not in logs  # no coordinates at all, in fact


def test_both_services_ride_out_a_redis_restart(
    make_stack: StackFactory, redis_server: RedisServer
) -> None:
    """Redis (AOF on) restarts under running services: neither dies, the open alarm survives,
    and a press after the restart reaches police."""
    stack = make_stack()
    stack.start_process("proximity")
    stack.start_process("gateway")
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    walk(offender, victim, stack.clock(), [50])
    stack.wait_notices("probation", lambda ns: "proximity_alarm" in kinds(ns, "opened"), "opened")
    redis_server.restart()
    victim.event(stack.clock(), "aware_button")
    stack.wait_notices("police", lambda ns: "aware_button" in kinds(ns, "opened"), "aware press")
    assert stack.processes_alive() == {"proximity": True, "gateway": True}
    opened = [n for n in stack.notices("probation") if n.event == "opened"]
    assert [n.kind for n in opened].count("proximity_alarm") == 1


def test_commands_committed_but_not_sent_before_a_crash_go_out_on_restart(
    make_stack: StackFactory,
) -> None:
    """A kill -9 between committing a batch and publishing its commands: the commands wait in
    the outbox, committed with the state that caused them, and the restarted service sends them."""
    stack = make_stack()
    victim = stack.device("vic-1")
    # What a crash right after the commit leaves behind.
    stack.redis.xadd(
        stack.shard_keys.command_outbox, {"device": "vic-1", "command": encode(Warn(level="alarm"))}
    )
    stack.start_process("proximity")
    wait_until(lambda: Warn(level="alarm") in victim.commands, what="the warning delivered")


def test_a_batch_with_commands_leaves_them_in_the_outbox_until_the_next_commit(
    make_stack: StackFactory,
) -> None:
    """Commands are committed to the outbox with their batch (so a crash cannot lose them) and
    cleared by the next commit, once they have been published."""
    stack = make_stack()
    stack.start_in_process()
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    ts = walk(offender, victim, stack.clock(), [50])
    wait_until(lambda: Warn(level="alarm") in victim.commands, what="the alarm warning")
    walk(offender, victim, ts, [60])  # a later batch: its commit clears what was sent
    wait_until(
        lambda: stack.redis.xlen(stack.shard_keys.command_outbox) == 0, what="outbox cleared"
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_kill9_of_both_services_mid_stream_changes_no_outcome(
    make_stack: StackFactory, seed: int
) -> None:
    """While an offender approaches, lingers and leaves, each service is killed -9 at a random
    moment of the stream and restarted: the outcome is exactly that of a calm run (one
    pre-alert, one alarm, both cleared once, every notice id unique) and no fix is lost."""
    stack = make_stack()
    # A restarted service first waits out its killed predecessor's lease
    # (services/shell/lease.py): on the 20x clock those seconds are minutes of offender silence,
    # not what this test judges.
    toml = stack.config_dir / "nabij.toml"
    toml.write_text(
        toml.read_text().replace("[proximity]\n", "[proximity]\nlocation_unknown_s = 3600\n", 1)
    )
    stack.start_process("gateway")
    stack.start_process("proximity")
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    distances = [3000 - 150 * i for i in range(18)] + [300] * 10 + [3000] * 12
    rng = random.Random(seed)
    kills = {rng.randrange(5, 20): "proximity", rng.randrange(20, 38): "gateway"}
    ts = stack.clock()
    for step, distance in enumerate(distances):
        if step in kills:
            stack.kill_process(kills[step])
            stack.start_process(kills[step])
        ts = walk(offender, victim, ts, [distance])
    offender.event(ts, "strap_tamper")
    stack.wait_notices("probation", lambda ns: "strap_tamper" in kinds(ns, "opened"), "tamper")
    stack.wait_applied("ank-1", offender.seq - 1)
    stack.wait_applied("vic-1", victim.seq)
    wait_until(stack.inbox_settled, what="gateway applied every signal")
    probation = stack.notices("probation")
    assert sorted(kinds(probation, "opened")) == [
        "proximity_alarm",
        "proximity_pre_alert",
        "strap_tamper",
    ]
    assert sorted(kinds(probation, "cleared")) == ["proximity_alarm", "proximity_pre_alert"]
    every_notice = probation + stack.notices("police")
    assert len({n.notice_id for n in every_notice}) == len(every_notice)
    state = msgspec.msgpack.decode(
        stack.redis.get(stack.shard_keys.device_state("ank-1")), type=DeviceState
    )
    assert state.last_seq == offender.seq - 1  # the last fix: the tamper moves no seq
