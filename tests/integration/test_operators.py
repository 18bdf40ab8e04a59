"""Operators are someone: each component as its own Redis ACL user, human requests only from
humans' tools, validated at both ends, answered with what the gateway really did, and every
field from Redis rendered safely on the terminal."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY

from nabij.contract import encode, outcome_decoder
from nabij.settings import RedisRole, Settings
from services.access.redis_acl import default_username
from services.alarm_gateway.core.alarms import AlarmBook
from services.alarm_gateway.core.record import AlarmRecord, decode_record, encode_record
from services.cli import main
from tests.gateway import factories
from tests.integration.stack import (
    ONE_PAIR,
    Stack,
    now_ms,
    redis_users_toml,
    wait_until,
    write_config,
)
from tests.integration.test_alarm_path import kinds, walk
from tests.integration.test_operations import http_get
from tests.servers import HOST, MosquittoServer, RedisServer, free_port

pytestmark = pytest.mark.integration
NABIJ = (sys.executable, "-m", "services.cli")
NO_BROKER = "mqtt://127.0.0.1:1"  # never connected to: these tests need Redis only


@dataclass
class Secured:
    """A stack whose components each connect as their own Redis user, under the ACL that
    `nabij redis-acl` generated from its config; `stack.redis` is a test administrator."""

    stack: Stack
    server: RedisServer
    passwords: dict[RedisRole, str]

    @property
    def cli(self) -> list[str]:
        return ["--config", str(self.stack.config_dir)]

    def client(self, role: RedisRole) -> redis.Redis:
        return redis.Redis(
            host=HOST,
            port=self.server.port,
            username=default_username(role),
            password=self.passwords[role],
            socket_timeout=10,
        )


@pytest.fixture
def secured(tmp_path: Path, mosquitto: MosquittoServer, unique_prefix: str) -> Iterator[Secured]:
    users_toml, passwords = redis_users_toml(tmp_path / "secrets")
    server = RedisServer(tmp_path / "redis")
    config_dir = write_config(
        tmp_path / "config",
        mqtt_url=mosquitto.url,
        redis_url=server.url,
        prefix=unique_prefix,
        orders_toml=ONE_PAIR,
        # The evidence trail on too: every chain's keys under each writer's own user.
        extra_toml=f'{users_toml}\n[audit]\nkey_file = "{tmp_path / "audit.key"}"\n',
    )
    acl = io.StringIO()
    with contextlib.redirect_stdout(acl):
        assert main(["redis-acl", "--config", str(config_dir)]) == 0
    server.acl_rules = acl.getvalue()
    server.start()
    stack = Stack(config_dir, mosquitto.url, server.admin_url)
    try:
        yield Secured(stack, server, passwords)
    finally:
        stack.stop()
        server.stop()


def _denials(client: redis.Redis) -> list[dict[str, object]]:
    return [dict(entry) for entry in client.acl_log()]


def test_the_alarm_path_and_the_cli_work_with_each_component_as_its_own_redis_user(
    secured: Secured, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Proximity, gateway and CLI, each as its own user, carry an alarm from a fix to its
    resolution and export its evidence, and no command of theirs is denied; the CLI tells who
    really holds the acknowledgement, and that an alarm is gone."""
    stack = secured.stack
    stack.start_in_process()
    walk(stack.device("ank-1"), stack.device("vic-1"), stack.clock(), [50])
    probation = stack.wait_notices(
        "probation", lambda ns: "proximity_alarm" in kinds(ns, "opened"), "alarm opened"
    )
    alarm_id = next(n.alarm_id for n in probation if n.kind == "proximity_alarm")

    assert main(["alarms", *secured.cli]) == 0
    assert alarm_id in capsys.readouterr().out
    assert main(["ack", alarm_id, "--by", "officer 17", *secured.cli]) == 0
    assert f"{alarm_id} acknowledged by officer 17" in capsys.readouterr().out
    assert main(["ack", alarm_id, "--by", "officer 2", *secured.cli]) == 1
    second = capsys.readouterr()
    assert "already acknowledged by officer 17" in second.err
    assert "acknowledged by officer 2" not in second.out + second.err.replace("by officer 2:", "")
    record = decode_record(stack.redis.hget(stack.keys.alarms, alarm_id))
    assert (record.acknowledged_by, record.acknowledged_via) == ("officer 17", "cli")
    assert (
        main(["resolve", alarm_id, "--by", "officer 2", "--note", "turned back", *secured.cli]) == 0
    )
    assert f"{alarm_id} resolved by officer 2" in capsys.readouterr().out
    assert main(["ack", alarm_id, "--by", "officer 17", *secured.cli]) == 1
    assert "no open alarm has this id" in capsys.readouterr().err
    wait_until(stack.inbox_settled, what="gateway applied every request")
    bundle = tmp_path / "bundle"
    export = ["audit", "export", "--order", "ORD-T-1", "--by", "clerk", "--out", str(bundle)]
    assert main([*export, "--role", "police", *secured.cli]) == 0
    assert main(["audit", "verify", str(bundle)]) == 0
    assert _denials(stack.redis) == []


def test_each_redis_user_holds_only_its_rights(secured: Secured) -> None:
    """Only humans' tools append human requests; only the gateway writes alarm records; the
    probation role cannot read the police queue or the victim's facts; nobody gets in without
    a password."""
    keys = secured.stack.keys
    request = {"input": b"{}"}
    proximity, probation, police = (secured.client(r) for r in ("proximity", "probation", "police"))
    denied = redis.exceptions.NoPermissionError
    for forbidden in (
        lambda: proximity.xadd(keys.human_requests, request),
        lambda: proximity.hset(keys.alarms, "AL-1", b"{}"),
        lambda: proximity.xdel(secured.stack.shard_keys.gateway_inbox, "1-1"),
        lambda: proximity.xrange(keys.dispatch("police")),
        lambda: probation.xread({keys.dispatch("police"): "0"}),
        lambda: probation.hget(keys.police_facts, "AL-1"),
        lambda: probation.hset(keys.alarms, "AL-1", b"{}"),
        lambda: probation.xadd(secured.stack.shard_keys.gateway_inbox, request),
        lambda: probation.set(keys.request_outcome("ack-1"), b"{}"),
        lambda: police.hset(keys.police_facts, "AL-1", b"{}"),
        lambda: police.xadd(keys.dispatch("police"), {"notice": b"{}"}),
    ):
        with pytest.raises(denied):
            forbidden()
    # What each may do.
    proximity.xadd(secured.stack.shard_keys.gateway_inbox, {"input": b"{}"})
    probation.xadd(keys.human_requests, request)
    assert probation.hgetall(keys.alarms) == {}
    assert probation.xrange(keys.dispatch("probation")) == []
    assert police.xrange(keys.dispatch("police")) == []
    assert police.hgetall(keys.police_facts) == {}
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host=HOST, port=secured.server.port).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(
            host=HOST, port=secured.server.port, username="nabij-gateway", password="guess"
        ).ping()


def test_the_gateway_refuses_forged_requests_written_straight_to_redis(secured: Secured) -> None:
    """A request with a newline in `by`, or a blank one, appended by a CLI user without the
    CLI is refused with its reason (counted, dead-lettered, told as the outcome); a request on
    the signal inbox is refused as out of place; the alarm stays unacknowledged."""
    stack, keys = secured.stack, secured.stack.keys
    stack.start_in_process("gateway")
    at = now_ms()
    signal = factories.signal("sig-1", kind="strap_tamper", at=at, distance_m=None)
    inbox = stack.shard_keys.gateway_inbox
    secured.client("proximity").sadd(keys.signal_inboxes, inbox)  # as a shard does at start
    secured.client("proximity").xadd(inbox, {"input": encode(signal)})
    [opened] = stack.wait_notices("probation", bool, "alarm opened")

    def forged(request_id: str, by: str) -> bytes:
        return (
            f'{{"type":"ack","request_id":"{request_id}","alarm_id":"{opened.alarm_id}",'
            f'"by":{by},"via":"cli","at":{at}}}'
        ).encode()

    rejected = ("nabij_messages_rejected_total", {"service": "gateway", "reason": "invalid_input"})
    before = REGISTRY.get_sample_value(*rejected) or 0
    operator = secured.client("probation")
    operator.xadd(keys.human_requests, {"input": forged("ack-newline", '"x\\n12:00 RESOLVED"')})
    operator.xadd(keys.human_requests, {"input": forged("ack-blank", '"  "')})
    secured.client("proximity").xadd(inbox, {"input": forged("ack-inbox", '"x"')})
    wait_until(lambda: len(stack.deadletters()) == 3, what="three dead letters")

    letters = {(f[b"reason"], f[b"topic"]) for f in stack.deadletters()}
    assert letters == {
        (b"invalid_input", keys.human_requests.encode()),
        (b"wrong_stream", inbox.encode()),
    }
    for request_id in ("ack-newline", "ack-blank"):
        outcome = outcome_decoder.decode(operator.get(keys.request_outcome(request_id)))
        assert outcome.status == "refused"
        assert outcome.detail.startswith("`by` must be a name")
    assert operator.get(keys.request_outcome("ack-inbox")) is None
    assert REGISTRY.get_sample_value(*rejected) == before + 2
    record = decode_record(operator.hget(keys.alarms, opened.alarm_id))
    assert record.acknowledged_by is None
    assert _denials(stack.redis) == []


def _redis_only_stack(
    redis_server: RedisServer, tmp_path: Path, prefix: str, extra_toml: str = ""
) -> Stack:
    """A configured nabij for what needs Redis and no broker (the CLI, one service process)."""
    config_dir = write_config(
        tmp_path / "config",
        mqtt_url=NO_BROKER,
        redis_url=redis_server.url,
        prefix=prefix,
        orders_toml=ONE_PAIR,
        extra_toml=extra_toml,
    )
    return Stack(config_dir, NO_BROKER, redis_server.url)


def test_the_cli_refuses_bad_text_itself_and_says_when_nobody_answered(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty or blank `--by`, or control characters in `--by` or `--note`, are refused before
    anything is sent (exit 2, the rule printed); with no gateway running, a valid request says
    it got no answer (exit 3) instead of claiming success."""
    stack = _redis_only_stack(redis_server, tmp_path, "cli")
    config_dir = stack.config_dir
    config = ["--config", str(config_dir)]
    for argv in (
        ["ack", "AL-1", "--by", ""],
        ["ack", "AL-1", "--by", "   "],
        ["resolve", "AL-1", "--by", "officer\n12:00:00 RESOLVED"],
        ["ack", "AL-1", "--by", "officer \x1b[2J"],
        ["ack", "AL-1", "--by", "officer \u202e71"],
        ["resolve", "AL-1", "--by", "officer", "--note", "gone\rRESOLVED"],
    ):
        assert main([*argv, *config]) == 2
        err = capsys.readouterr().err
        assert "refused, nothing sent" in err
        assert "must be" in err
    assert stack.redis.xlen(stack.keys.human_requests) == 0
    assert main(["ack", "AL-1", "--by", "officer 17", "--wait", "0.3", *config]) == 3
    assert "no answer from the gateway" in capsys.readouterr().out
    assert stack.redis.xlen(stack.keys.human_requests) == 1
    stack.stop()


INJECTED = "\n12:00:00 [police   ] RESOLVED forged\r\x1b[2J\x1b]0;title\x07\u202egnp\u2028x\x85"


def _unsafe(line: str) -> list[str]:
    return [c for c in line if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]


def test_tail_and_alarms_show_injected_text_escaped(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Notices and records written straight into Redis with newlines, carriage returns, terminal
    escapes and bidi overrides in every text field print one line each, with no raw control
    character."""
    stack = _redis_only_stack(redis_server, tmp_path, "tail")
    config_dir = stack.config_dir
    notices = [
        factories.notice(
            notice_id=f"n-{i}{INJECTED}",
            alarm_id=f"AL-{i}{INJECTED}",
            order_id=f"ORD{INJECTED}",
            at=now_ms(),
            reason=f"Acknowledged{INJECTED}",
            by=f"officer{INJECTED}",
            note=f"note{INJECTED}",
            zone=f"zone{INJECTED}",
        )
        for i in range(3)
    ]
    for notice in notices:
        stack.redis.xadd(stack.keys.dispatch("probation"), {"notice": encode(notice)})
    tail = subprocess.Popen(
        [*NABIJ, "tail", "probation", "--from-start", "--config", str(config_dir)],
        stdout=subprocess.PIPE,  # bytes: a raw \r must reach the assertion as it was printed
        stderr=subprocess.PIPE,
    )
    assert tail.stdout is not None
    lines = [tail.stdout.readline().decode() for _ in notices]
    tail.terminate()
    rest, err = tail.communicate(timeout=10)
    assert rest == b"", err
    for line in lines:
        assert line.endswith("\n")
        assert _unsafe(line[:-1]) == []
        assert "\\n12:00:00" in line and "\\x1b[2J" in line and "\\u202e" in line

    record = _record_with(f"AL-9{INJECTED}", by=f"officer{INJECTED}")
    stack.redis.hset(stack.keys.alarms, record.alarm_id, encode_record(record))
    listing = subprocess.run(
        [*NABIJ, "alarms", "--config", str(config_dir)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=True,
    ).stdout
    assert listing.count("\n") == 1
    assert _unsafe(listing[:-1]) == []
    stack.stop()


def _record_with(alarm_id: str, *, by: str) -> AlarmRecord:
    """An alarm record as the gateway writes one, with `alarm_id` and `by` as given."""
    [record] = AlarmBook(Settings()).apply(factories.signal("sig-1"), factories.T0).upserts
    record.alarm_id, record.acknowledged_by, record.order_id = alarm_id, by, f"ORD{INJECTED}"
    return record


def test_metrics_and_health_answer_only_on_the_configured_address(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """`nabij gateway --metrics-port` serves on `[health] bind` and on no other address."""
    stack = _redis_only_stack(
        redis_server, tmp_path, "health", extra_toml='[health]\nbind = "127.0.0.2"\n'
    )
    config_dir = stack.config_dir
    port = free_port()
    gateway = subprocess.Popen(
        [*NABIJ, "gateway", "--config", str(config_dir), "--metrics-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "gateway.log").open("ab"),
    )
    try:
        wait_until(
            lambda: http_get(f"http://127.0.0.2:{port}/readyz")[0] == 200,
            what="ready on 127.0.0.2",
            detail=(tmp_path / "gateway.log").read_text,
        )
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 0  # nothing listens there
    finally:
        gateway.terminate()
        gateway.wait(timeout=10)
        stack.stop()
