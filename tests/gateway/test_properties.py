"""Properties over arbitrary sequences of signals, requests, timer turns and restarts."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nabij.config import EscalationPolicy, GatewaySettings, Settings
from nabij.contract import (
    ALARM_KINDS,
    QUEUE_NAMES,
    AckRequest,
    AlarmKind,
    AlarmSignal,
    GatewayInput,
    NoticeEvent,
    Position,
    QueueName,
    ResolveRequest,
    SignalAction,
    encode,
    notice_decoder,
)
from services.alarm_gateway.core import transitions as t
from services.alarm_gateway.core.alarms import (
    RESOLVED_KEPT,
    AlarmBook,
    AlarmRecord,
    Decision,
    build_notices,
    decode_record,
    encode_police_facts,
    encode_record,
    police_facts_decoder,
)
from tests.gateway.factories import T0, signal
from tests.roles import assert_probation_safe, assert_record_safe

KEYS = ("key-a", "key-b", "key-c")

queue_lists = st.lists(st.sampled_from(QUEUE_NAMES), min_size=1, max_size=2, unique=True)
policies = st.builds(
    EscalationPolicy,
    priority=st.integers(1, 3),
    queues=queue_lists,
    ack_timeout_s=st.sampled_from([1, 30, 60, 300]),
    escalate_to=st.lists(st.sampled_from(QUEUE_NAMES), max_size=2, unique=True),
)
gateway_settings = st.builds(
    Settings,
    gateway=st.builds(GatewaySettings, update_min_interval_s=st.sampled_from([0, 5, 30, 600])),
    escalation=st.dictionaries(st.sampled_from(ALARM_KINDS), policies, max_size=4),
)
positions = st.builds(
    Position,
    lat=st.floats(-89.9, 89.9).map(lambda v: round(v, 6)),
    lon=st.floats(-179.9, 179.9).map(lambda v: round(v, 6)),
    acc=st.floats(1, 500).map(lambda v: round(v, 1)),
    ts=st.just(T0),
)


@st.composite
def signal_pool(draw: st.DrawFn) -> list[AlarmSignal]:
    """Distinct signals (each id names one input); ops reuse them to model redelivery."""
    kinds = {key: draw(st.sampled_from(ALARM_KINDS)) for key in KEYS}
    pool: list[AlarmSignal] = []
    for n in range(draw(st.integers(4, 14))):
        key = draw(st.sampled_from(KEYS))
        offender = draw(positions)
        victim = draw(st.none() | positions)
        coordinates = f"{offender.lat}, {offender.lon}"
        reason = draw(
            st.sampled_from(
                [
                    "Offender within 480 m of victim (alarm ring 500 m)",
                    f"Offender at {coordinates} near victim",
                    "",
                ]
            )
        )
        pool.append(
            AlarmSignal(
                signal_id=f"sig-{n}",
                action=draw(st.sampled_from(["open", "open", "update", "clear"])),
                kind=kinds[key],
                alarm_key=key,
                order_id="ORD-1",
                offender_device="ank-1",
                victim_device="vic-1" if victim is not None else None,
                at=T0,
                reason=reason,
                distance_m=draw(st.none() | st.floats(0, 5000)),
                offender=offender,
                victim=victim,
            )
        )
    return pool


gaps = st.sampled_from([0, 0, 500, 4_000, 20_000, 61_000, 400_000])
signal_ops = st.tuples(st.just("signal"), st.integers(0, 13), gaps)
ops = st.lists(
    st.one_of(
        signal_ops,
        signal_ops,
        signal_ops,
        st.tuples(st.sampled_from(["ack", "resolve"]), st.integers(0, 5), gaps),
        st.tuples(st.just("tick"), st.just(0), gaps),
        st.tuples(st.just("restart"), st.just(0), st.just(0)),
    ),
    min_size=12,
    max_size=60,
)

NOTICE_EVENTS: tuple[NoticeEvent, ...] = NoticeEvent.__args__  # type: ignore[attr-defined]
_COORDINATE_LIKE = re.compile(r"\d{1,3}\.\d{4,}")


@dataclass
class Run:
    config: Settings
    pool: list[AlarmSignal]
    book: AlarmBook
    now: int = T0
    notice_ids: set[str] = field(default_factory=set)
    requests: dict[str, AckRequest | ResolveRequest] = field(default_factory=dict)
    resolved: list[AlarmRecord] = field(default_factory=list)  # as the resolved stream keeps them
    seen_signals: set[str] = field(default_factory=set)

    def check(self, decision: Decision) -> None:
        coordinates = {
            str(v)
            for s in self.pool
            for p in (s.offender, s.victim)
            if p is not None
            for v in (p.lat, p.lon)
            if _COORDINATE_LIKE.fullmatch(str(abs(v)))
        }
        for queue, notice in decision.notices:
            # PRIVACY: exact figures and the victim's position reach the police queue only.
            if queue != "police":
                assert_probation_safe(notice)
            assert queue in notice.queues
            assert notice.notice_id not in self.notice_ids, notice.notice_id
            self.notice_ids.add(notice.notice_id)
            assert notice.at == self.now
            assert notice_decoder.decode(encode(notice)) == notice
            assert not any(c in notice.reason for c in coordinates), notice.reason
        assert not (
            {r.alarm_id for r in decision.upserts} & {r.alarm_id for r in decision.resolved}
        )
        for record in (*decision.upserts, *decision.resolved):
            assert_record_safe(record, coordinates)
        self.resolved.extend(decision.resolved)
        self.check_book()

    def check_book(self) -> None:
        open_alarms = self.book.open_alarms()
        assert len({r.alarm_key for r in open_alarms}) == len(open_alarms)
        for record in open_alarms:
            if record.acknowledged_by is None:
                assert record.next_due_ms is not None, record
            if record.next_due_ms is None:
                assert not record.pending_update
            assert record.level >= 1

    def apply(self, item: GatewayInput) -> Decision:
        decision = self.book.apply(item, self.now)
        self.check(decision)
        # Redelivery of what was just applied never notifies again.
        replay = self.book.apply(item, self.now)
        assert replay.notices == [], item
        self.check(replay)
        return decision


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=gateway_settings, pool=signal_pool(), steps=ops)
def test_any_input_sequence_keeps_the_invariants(
    config: Settings, pool: list[AlarmSignal], steps: list[tuple[str, int, int]]
) -> None:
    """For any sequence of signals, acks, resolves, timer turns and restarts: probation notices
    hold only probation fields (no exact figure, no victim position, no offender position on an
    alarm about her whereabouts, no length in the reason but the band's), stored records hold no
    position, notice ids are unique, every open unacknowledged alarm has a due
    time, reasons carry no coordinates, a redelivered input never notifies twice, every new
    aware-button press notifies, and a reloaded book behaves like the original."""
    run = Run(config=config, pool=pool, book=AlarmBook(config))
    for op, index, dt in steps:
        run.now += dt
        if op == "signal":
            item = pool[index % len(pool)]
            fresh = item.signal_id not in run.seen_signals
            decision = run.apply(item)
            if item.kind == "aware_button" and item.action != "clear" and fresh:
                assert decision.notices, item
            run.seen_signals.add(item.signal_id)
        elif op in ("ack", "resolve"):
            request_id = f"{op}-{index}"
            request = run.requests.get(request_id)
            if request is None:
                alarms = run.book.open_alarms()
                target = alarms[index % len(alarms)].alarm_id if alarms else "AL-none"
                kind = AckRequest if op == "ack" else ResolveRequest
                request = kind(request_id=request_id, alarm_id=target, by="op", via="cli", at=T0)
                run.requests[request_id] = request
            run.apply(request)
        elif op == "tick":
            for alarm_id in run.book.due(run.now):
                run.check(run.book.fire_due(alarm_id, run.now))
            assert run.book.due(run.now) == []
            due = run.book.next_due_ms()
            assert due is None or due > run.now
        else:
            run.book = _restart(run)
            run.check_book()


def _restart(run: Run) -> AlarmBook:
    """A new book from the open records plus the recently resolved ones, both via JSON, and the
    open ones' police facts from their own hash."""
    records = (*run.resolved[-RESOLVED_KEPT:], *run.book.open_alarms())
    police = {r.alarm_id: encode_police_facts(r.police) for r in records if r.police is not None}
    loaded = [decode_record(encode_record(r)) for r in records]
    for record in loaded:
        if record.alarm_id in police:
            record.police = police_facts_decoder.decode(police[record.alarm_id])
    book = AlarmBook(run.config)
    book.load(loaded)
    assert book.open_alarms() == run.book.open_alarms()
    assert book.next_due_ms() == run.book.next_due_ms()
    return book


flap_ops = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["open", "update", "clear", "clear"]), gaps),
        st.tuples(st.sampled_from(["tick", "ack", "restart"]), gaps),
    ),
    min_size=5,
    max_size=80,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    interval_s=st.sampled_from([0, 5, 30, 600]),
    ack_timeout_s=st.sampled_from([1, 30, 300]),
    kind=st.sampled_from([k for k in ALARM_KINDS if k != "aware_button"]),
    steps=flap_ops,
)
def test_flapping_after_an_ack_is_rate_limited_and_withdraws_the_ack_at_most_once_per_interval(
    interval_s: int, ack_timeout_s: int, kind: AlarmKind, steps: list[tuple[str, int]]
) -> None:
    """Any sequence of open/update/clear signals of one key (each a new input), timer turns,
    re-acknowledgements and restarts, after an acknowledged alarm: it stays one alarm; two
    withdrawals of the acknowledgement are at least an update interval apart (so flapping
    within an interval withdraws it at most once); every `cleared` notice, and every `updated`
    but a real return right after a told clear, comes at least an interval after the previous
    `updated`/`cleared` notice (so at most two in any interval)."""
    policy = EscalationPolicy(priority=2, queues=["probation"], ack_timeout_s=ack_timeout_s)
    config = Settings(
        gateway=GatewaySettings(update_min_interval_s=interval_s), escalation={kind: policy}
    )
    interval = interval_s * 1000
    pool: list[AlarmSignal] = []
    run = Run(config=config, pool=pool, book=AlarmBook(config))

    def flap(action: SignalAction) -> AlarmSignal:
        reason = f"Device ank-1 {action} ({len(pool)})"
        pool.append(signal(f"flap-{len(pool)}", action, kind=kind, key="key-flap", reason=reason))
        return pool[-1]

    alarm_id = run.apply(flap("open")).upserts[0].alarm_id
    run.apply(AckRequest(request_id="ack-0", alarm_id=alarm_id, by="op", via="cli", at=T0))
    withdrawals: list[int] = []
    told: list[tuple[int, str]] = []  # (at, event) of every updated/cleared notice

    def observe(decision: Decision, acked_before: bool) -> None:
        events = {(n.at, n.event) for _, n in decision.notices}
        told.extend(sorted(e for e in events if e[1] in ("updated", "cleared")))
        record = run.book.get(alarm_id)
        assert record is not None, "one alarm for the whole sequence"
        if acked_before and record.acknowledged_by is None:
            withdrawals.append(run.now)

    for n, (op, dt) in enumerate(steps):
        run.now += dt
        record = run.book.get(alarm_id)
        assert record is not None
        acked = record.acknowledged_by is not None
        if op in ("open", "update", "clear"):
            observe(run.apply(flap(op)), acked)  # type: ignore[arg-type]  # one of the actions
        elif op == "tick":
            for due_id in run.book.due(run.now):
                decision = run.book.fire_due(due_id, run.now)
                run.check(decision)
                observe(decision, acked)
        elif op == "ack":
            request = AckRequest(
                request_id=f"ack-{n + 1}", alarm_id=alarm_id, by="op", via="cli", at=T0
            )
            observe(run.apply(request), acked)
        else:
            run.book = _restart(run)
    for earlier, later in itertools.pairwise(withdrawals):
        assert later - earlier >= interval, withdrawals
    for (before, before_event), (at, event) in itertools.pairwise(told):
        real_return = event == "updated" and before_event == "cleared"
        assert at - before >= interval or real_return, told


def test_records_in_decisions_are_never_mutated_later() -> None:
    """A record handed out in a Decision keeps the state it was decided with (the shell may
    write a batch of decisions after applying all of them)."""
    book = AlarmBook(Settings())
    signal = AlarmSignal(
        signal_id="s1",
        action="open",
        kind="proximity_alarm",
        alarm_key="k",
        order_id="O",
        offender_device="a",
        at=T0,
        reason="x",
    )
    first: AlarmRecord = book.apply(signal, T0).upserts[0]
    snapshot = encode(first)
    book.fire_due(first.alarm_id, T0 + 60_000)
    assert encode(first) == snapshot


@given(
    kind=st.sampled_from(ALARM_KINDS),
    event=st.sampled_from(NOTICE_EVENTS),
    queues=queue_lists,
    victim=positions,
    offender=positions,
)
def test_only_police_notices_carry_the_victim_position(
    kind: AlarmKind,
    event: NoticeEvent,
    queues: list[QueueName],
    victim: Position,
    offender: Position,
) -> None:
    """For every alarm kind and notice event, the notice built for a non-police queue never
    carries the victim's position; the police notice carries it; reasons carry no coordinates."""
    latest = AlarmSignal(
        signal_id="s",
        action="open",
        kind=kind,
        alarm_key="k",
        order_id="O",
        offender_device="a",
        at=T0,
        reason=f"Offender at {offender.lat:.6f}, {offender.lon:.6f}; victim {victim.lat:.5f}",
        offender=offender,
        victim=victim,
    )
    record = t.open_alarm(t.Rules(Settings()), latest, "AL-x", "sig:s", T0)[0]
    record.queues = queues
    built = build_notices(record, event, T0, lead=latest.reason, by="op")
    assert [q for q, _ in built] == queues
    for queue, notice in built:
        assert notice.victim == (victim if queue == "police" else None)
        assert f"{offender.lat:.6f}" not in notice.reason
        assert f"{victim.lat:.5f}" not in notice.reason
