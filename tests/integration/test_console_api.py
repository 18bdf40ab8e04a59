"""The console's API on real Redis (and, where alarms are needed, the real services): logins,
CSRF, sessions, a restart, and PRIVACY: everything a probation operator can fetch."""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from nabij.settings import ConsoleSettings
from services.alarm_gateway.core.alarms import encode_record, police_facts_decoder
from services.cli import main
from services.console.app import create_app, events
from services.console.core import Session
from services.console.identity import Operators
from services.shell.redis_io import connect_as
from tests.integration.conftest import StackFactory
from tests.integration.console import (
    POLICE,
    PROBATION,
    VICTIM_DIGITS,
    add_operators,
    approach_with_press,
    console_app,
    logged_in,
)
from tests.integration.stack import ManualClock, Stack, now_ms, wait_until
from tests.integration.test_alarm_path import fast_escalation, kinds, walk
from tests.integration.test_operators import Secured, _denials, _record_with
from tests.integration.test_operators import secured as secured_stack
from tests.servers import RedisServer

pytestmark = pytest.mark.integration
ACTIONS = [("/api/alarms/AL-1/ack", {}), ("/api/alarms/AL-1/resolve", {"note": "x"}),
           ("/api/logout", {})]  # fmt: skip
STRICT = ConsoleSettings(login_attempts=3, login_window_s=60, session_ttl_s=600)


def _quiet_stack(make_stack: StackFactory) -> Stack:
    """A stack with operators but no services running: enough for the console's own rules."""
    stack = make_stack()
    add_operators(stack)
    return stack


def test_failed_logins_are_rate_limited_per_name_until_the_window_passes(
    make_stack: StackFactory,
) -> None:
    """After 3 wrong passwords, even the right one is refused (429, Retry-After) until the
    window has passed on the console's clock; then it logs in."""
    stack = _quiet_stack(make_stack)
    clock = ManualClock(now_ms())
    client, _ = logged_in(console_app(stack, clock, STRICT), POLICE)  # another name: unaffected
    for _ in range(3):
        wrong = client.post("/api/login", json={"name": PROBATION[0], "password": "guess"})
        assert wrong.status_code == 401
    right = {"name": PROBATION[0], "password": PROBATION[1]}
    refused = client.post("/api/login", json=right)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    clock.advance(60_000)
    assert client.post("/api/login", json=right).status_code == 200


def test_state_changes_without_the_csrf_token_are_refused_and_do_nothing(
    make_stack: StackFactory,
) -> None:
    """Acknowledge, resolve and logout without `X-CSRF-Token`, or with another session's token:
    403, no request reaches the gateway's stream, the session still works."""
    stack = _quiet_stack(make_stack)
    app = console_app(stack)
    client, token = logged_in(app, PROBATION)
    _other, other_token = logged_in(app, POLICE)
    for headers in ({}, {"X-CSRF-Token": other_token}, {"X-CSRF-Token": ""}):
        for path, body in ACTIONS:
            answer = client.post(path, json=body, headers=headers)
            assert answer.status_code == 403, (path, headers, answer.text)
    assert stack.redis.xlen(stack.keys.human_requests) == 0
    assert client.get("/api/alarms").status_code == 200
    assert client.post("/api/logout", headers={"X-CSRF-Token": token}).status_code == 200
    assert client.get("/api/alarms").status_code == 401


def test_an_expired_session_is_refused_and_pages_send_to_the_login(
    make_stack: StackFactory,
) -> None:
    """Past `session_ttl_s` on the console's clock the API answers 401 and a page redirects to
    the login page, which says the session expired. Removing an operator ends their session."""
    stack = _quiet_stack(make_stack)
    clock = ManualClock(now_ms())
    client, _ = logged_in(console_app(stack, clock, STRICT), PROBATION)
    assert client.get("/api/alarms").status_code == 200
    clock.advance(600_000)
    assert client.get("/api/alarms").status_code == 401
    page = client.get("/board", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?expired=1"
    assert "session expired" in client.get("/login?expired=1").text
    police, _ = logged_in(console_app(stack, clock, STRICT), POLICE)
    Operators(stack.redis, stack.keys).remove(POLICE[0])
    assert police.get("/api/alarms").status_code == 401  # a removed operator's session ends


def test_invalid_input_is_refused_with_a_reason(make_stack: StackFactory) -> None:
    """A malformed alarm id, a resolve without a note, a control character in a note: 422 with
    the rule, nothing sent."""
    stack = _quiet_stack(make_stack)
    client, token = logged_in(console_app(stack), PROBATION)
    csrf = {"X-CSRF-Token": token}
    assert client.get("/api/alarms/AL%0Aforged").status_code == 422
    assert client.post("/api/alarms/AL-1/resolve", json={}, headers=csrf).status_code == 422
    control = client.post("/api/alarms/AL-1/ack", json={"note": "ok\x1b[2J"}, headers=csrf)
    assert control.status_code in (404, 422), control.text
    assert client.post("/api/login", json={"name": ""}).status_code == 422
    assert stack.redis.xlen(stack.keys.human_requests) == 0


def _probation_sees(stack: Stack) -> list[str]:
    """Every byte the console answers a probation operator on every route, for every alarm id
    there is (its own, police-only ones, made-up ones), and the live updates during the approach."""
    app = console_app(stack)
    client, token = logged_in(app, PROBATION)
    ids = {n.alarm_id for q in ("probation", "police") for n in stack.notices(q)} | {"AL-none"}
    answers: list[str] = []
    for route in app.routes:
        path = getattr(route, "path", "")
        if path in ("/api/events", "/static") or not isinstance(route, APIRoute):
            continue
        for alarm_id in ids if "{alarm_id}" in path else [""]:
            url = path.replace("{alarm_id}", alarm_id)
            if "GET" in route.methods:
                answers.append(client.get(url).text)
            if "POST" in route.methods and path != "/api/logout":
                reply = client.post(url, json={"note": "checked"}, headers={"X-CSRF-Token": token})
                answers.append(reply.text)
    return answers


def test_probation_finds_no_victim_position_or_exact_distance_anywhere(
    make_stack: StackFactory,
) -> None:
    """PRIVACY: after an approach with her press (alarms at both queues, her position in the
    police facts), a probation operator fetches every page and API route for every alarm id, and
    follows the live updates: no victim coordinate, no exact distance, no offender position on
    alarms about her whereabouts. A police operator gets her position on the same alarms."""
    stack = make_stack(extra_toml=fast_escalation(ack_timeout_s=20))
    add_operators(stack)
    stack.start_in_process()
    live: list[str] = []
    stop = threading.Event()
    reader = console_app(stack).state.console.reader
    follower = threading.Thread(
        target=lambda: live.extend(
            events(reader, Session("p", "probation", "x", 2**62), stop.is_set)
        )
    )
    follower.start()
    approach_with_press(stack)
    wait_until(lambda: len(live) > 3, what="live updates")
    stop.set()
    follower.join(timeout=10)

    answers = _probation_sees(stack) + live
    exact = [police_facts_decoder.decode(b) for b in stack.redis.hvals(stack.keys.police_facts)]
    secrets = [*VICTIM_DIGITS] + [repr(f.distance_m) for f in exact if f.distance_m]
    assert len(secrets) > 2
    for text in answers:
        assert not any(secret in text for secret in secrets), text[:400]
        assert "distance_m" not in text and '"victim":{' not in text
    police, _ = logged_in(console_app(stack), POLICE)
    pressed = next(n.alarm_id for n in stack.notices("police") if n.kind == "aware_button")
    seen = police.get(f"/api/alarms/{pressed}").json()
    assert seen["track"]["victim"]["lat"] == pytest.approx(52.37881)
    assert all(d in police.get(f"/alarms/{pressed}").text for d in VICTIM_DIGITS)
    probation, _ = logged_in(console_app(stack), PROBATION)
    alarm = next(n.alarm_id for n in stack.notices("probation") if n.kind == "proximity_alarm")
    assert probation.get(f"/api/alarms/{alarm}").json()["track"] == {"offender": []}


def test_a_console_restart_keeps_the_board_complete_and_acks_wait_for_the_gateway(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    """The board is rebuilt from Redis: a new console shows every open alarm of the queue. An
    acknowledgement while the gateway is down is queued (202) and applied when it returns."""
    stack = make_stack(extra_toml=fast_escalation(ack_timeout_s=20))
    add_operators(stack)
    stack.start_process("proximity")
    stack.start_process("gateway")
    approach_with_press(stack)
    records = {
        r["alarm_id"] for r in map(msgspec.json.decode, stack.redis.hvals(stack.keys.alarms))
        if "probation" in r["queues"]
    }  # fmt: skip
    before, _ = logged_in(console_app(stack), PROBATION)
    shown = {a["alarm_id"] for a in before.get("/api/alarms").json()["alarms"]}
    assert shown == records and len(shown) >= 3
    stack.kill_process("gateway")
    after, token = logged_in(console_app(stack), PROBATION)  # the console restarted
    assert {a["alarm_id"] for a in after.get("/api/alarms").json()["alarms"]} == shown
    alarm = next(n.alarm_id for n in stack.notices("probation") if n.kind == "proximity_alarm")
    queued = after.post(f"/api/alarms/{alarm}/ack", json={}, headers={"X-CSRF-Token": token})
    assert queued.status_code == 202 and queued.json()["status"] == "queued"
    stack.start_process("gateway")
    wait_until(
        lambda: (
            after.get(f"/api/alarms/{alarm}").json()["alarm"].get("acknowledged_by") == PROBATION[0]
        ),
        what="the queued acknowledgement applied",
    )


secured = secured_stack  # each component as its own Redis user (tests/integration/test_operators)


def test_the_console_works_as_its_own_redis_user_with_operators_from_the_cli(
    secured: Secured, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`nabij operator add` (password from a file) and `remove`, then the console connected as
    the `console` Redis user: login, board, alarm page, orders page, an acknowledgement applied
    by the gateway, and Redis denies none of its commands."""
    stack = secured.stack
    password_file = tmp_path / "pw"
    password_file.write_text("a long enough password\n", encoding="utf-8")
    config = ["--config", str(stack.config_dir)]
    assert main(["operator", "add", "Desk 3", "--role", "probation",
                 "--password-file", str(password_file), *config]) == 0  # fmt: skip
    short = tmp_path / "short"
    short.write_text("short\n", encoding="utf-8")
    assert main(["operator", "add", "Desk 4", "--role", "police", "--password-file", str(short),
                 *config]) == 2  # fmt: skip
    assert "at least 12 characters" in capsys.readouterr().err
    stack.start_in_process()
    walk(stack.device("ank-1"), stack.device("vic-1"), stack.clock(), [50])
    stack.wait_notices("probation", lambda ns: "proximity_alarm" in kinds(ns, "opened"), "alarm")
    as_console = connect_as(stack.config.settings.redis, "console")
    app = create_app(as_console, stack.keys, stack.config.settings.console, stack.clock)
    client, token = logged_in(app, ("Desk 3", "a long enough password"))
    [alarm] = [a for a in client.get("/api/alarms").json()["alarms"] if a["level"] >= 1][:1]
    for page in ("/board", f"/alarms/{alarm['alarm_id']}", "/orders", "/api/orders"):
        assert client.get(page).status_code == 200, page
    acked = client.post(f"/api/alarms/{alarm['alarm_id']}/ack", json={"note": "on it"},
                        headers={"X-CSRF-Token": token})  # fmt: skip
    assert acked.json() == {"status": "applied",
                            "message": f"{alarm['alarm_id']} acknowledged by Desk 3"}  # fmt: skip
    assert _denials(stack.redis) == []
    assert main(["operator", "remove", "Desk 3", *config]) == 0
    assert main(["operator", "remove", "Desk 3", *config]) == 1
    assert client.get("/api/alarms").status_code == 401


def test_text_from_redis_is_escaped_in_every_page(make_stack: StackFactory) -> None:
    """An alarm record whose order id and acknowledger hold markup (as a hostile writer might
    store): the board and alarm page show it as text, never as markup."""
    stack = _quiet_stack(make_stack)
    markup = "<img src=x onerror=alert(1)>"
    record = _record_with("AL-markup", by=markup)
    record.order_id, record.queues = markup, ["probation"]
    stack.redis.hset(stack.keys.alarms, "AL-markup", encode_record(record))
    client, _ = logged_in(console_app(stack), PROBATION)
    for page in ("/board", "/board/rows", "/alarms/AL-markup"):
        text = client.get(page).text
        assert markup not in text and "&lt;img src=x onerror=alert(1)&gt;" in text, page


def test_a_notice_that_does_not_parse_is_told_not_hidden(make_stack: StackFactory) -> None:
    """Junk in the probation queue: the alarm page says a notice could not be read, the live
    stream reports it as a fault and carries on with the next notice."""
    stack = _quiet_stack(make_stack)
    record = _record_with("AL-1", by="officer 1")
    record.order_id, record.queues = "ORD-T-1", ["probation"]
    stack.redis.hset(stack.keys.alarms, "AL-1", encode_record(record))
    queue = stack.keys.dispatch("probation")
    client, _ = logged_in(console_app(stack), PROBATION)
    live: list[str] = []
    stop = threading.Event()
    reader = console_app(stack).state.console.reader
    session = Session("p", "probation", "x", 2**62)
    follower = threading.Thread(target=lambda: live.extend(events(reader, session, stop.is_set)))
    follower.start()
    wait_until(lambda: any("event: status" in chunk for chunk in live), what="stream open")
    stack.redis.xadd(queue, {"notice": b"{not json"})
    stack.redis.xadd(queue, {"wrong": b"field"})
    wait_until(lambda: sum("event: fault" in chunk for chunk in live) == 2, what="two faults")
    stop.set()
    follower.join(timeout=10)
    assert "2 notice(s) in the queue could not be read" in client.get("/alarms/AL-1").text


def test_a_redis_restart_is_told_and_the_console_recovers_by_itself(
    make_stack: StackFactory, redis_server: RedisServer
) -> None:
    """Redis goes away under the console: the API answers 503 with a plain reason, the live
    stream says Redis is unreachable; once Redis is back both work again, session intact."""
    stack = _quiet_stack(make_stack)
    app = console_app(stack)
    client, _ = logged_in(app, PROBATION)
    live: list[str] = []
    stop = threading.Event()
    session = Session("p", "probation", "x", 2**62)
    reader = app.state.console.reader
    follower = threading.Thread(target=lambda: live.extend(events(reader, session, stop.is_set)))
    follower.start()
    wait_until(lambda: any('"redis": true' in chunk for chunk in live), what="stream open")
    redis_server.stop()
    down = client.get("/api/alarms")
    assert down.status_code == 503 and "Redis cannot be reached" in down.json()["detail"]
    wait_until(lambda: any('"redis": false' in chunk for chunk in live), what="outage told")
    redis_server.start()
    wait_until(lambda: client.get("/api/alarms").status_code == 200, what="API back")
    told = len(live)
    wait_until(lambda: any('"redis": true' in c for c in live[told - 1 :]), what="stream back")
    stop.set()
    follower.join(timeout=10)


def test_two_operators_acknowledging_at_once_give_one_acknowledgement(
    make_stack: StackFactory,
) -> None:
    """Two probation operators press Acknowledge on the same alarm at the same moment: the
    gateway applies one; the other is told who holds it; one `acknowledged` notice."""
    stack = make_stack()
    add_operators(stack)
    Operators(stack.redis, stack.keys).add("Officer Bakker", "probation", "second password 3")
    stack.start_in_process()
    walk(stack.device("ank-1"), stack.device("vic-1"), stack.clock(), [50])
    notices = stack.wait_notices(
        "probation", lambda ns: "proximity_alarm" in kinds(ns, "opened"), "alarm"
    )
    alarm = next(n.alarm_id for n in notices if n.kind == "proximity_alarm")
    app = console_app(stack)
    desks = [logged_in(app, PROBATION), logged_in(app, ("Officer Bakker", "second password 3"))]
    answers: list[dict[str, str]] = []
    start = threading.Barrier(2)

    def press(client: TestClient, token: str) -> None:
        start.wait()
        reply = client.post(f"/api/alarms/{alarm}/ack", json={}, headers={"X-CSRF-Token": token})
        answers.append(reply.json())

    pressing = [threading.Thread(target=press, args=desk) for desk in desks]
    for thread in pressing:
        thread.start()
    for thread in pressing:
        thread.join(timeout=30)
    assert sorted(a["status"] for a in answers) == ["already_acknowledged", "applied"], answers
    [applied] = [a for a in answers if a["status"] == "applied"]
    holder = applied["message"].rsplit(" by ", 1)[1]
    [refused] = [a for a in answers if a["status"] != "applied"]
    assert f"already acknowledged by {holder}" in refused["message"]
    stack.wait_notices("probation", lambda ns: "acknowledged" in [n.event for n in ns], "ack")
    acks = [n for n in stack.notices("probation") if n.event == "acknowledged"]
    assert [n.by for n in acks if n.alarm_id == alarm] == [holder]
