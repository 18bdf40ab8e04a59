"""Several proximity processes, pairs kept together (real Mosquitto and Redis): two shards give
the alarm timeline of one process, a shard killed -9 under load loses nothing, and changing the
number of shards carries the state over."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from nabij.config import load_config
from nabij.contract import QUEUE_NAMES, AlarmSignal, encode
from nabij.keys import Shard
from services.proximity.core.state import DeviceState, device_state_decoder, pair_state_decoder
from simulators.check import run_checked
from simulators.runner import load_scenario
from tests.integration.conftest import StackFactory
from tests.integration.stack import (
    TWO_SHARDED_PAIRS,
    VICTIM_HOME,
    SimDevice,
    Stack,
    north_of,
    wait_until,
)
from tests.integration.test_live_orders import apply
from tests.servers import MosquittoServer, RedisServer
from tests.simulators.checked import SPEED, checked_stack

pytestmark = pytest.mark.integration

# A sample of the shipped scenarios: one judged by shard 1 of 2, one by shard 2 with two orders.
SAMPLE = ("approach", "victim_reboot_press")
Timeline = list[tuple[str, str, str, str]]


def timeline(stack: Stack, end_ms: int) -> Timeline:
    """What the scenario's notices say, up to its end: every opening and clearing as (queue,
    order, kind, event), and which alarms were escalated or reminded of (once each). How many
    reminders and `updated` notices there are, and what comes after the end (devices that stop
    fall silent), depends on wall timing, not on who judged."""
    notices = [
        (queue, n.order_id, n.kind, n.event)
        for queue in QUEUE_NAMES
        for n in stack.notices(queue)
        if n.event != "updated" and n.at <= end_ms
    ]
    told = [n for n in notices if n[3] in ("opened", "cleared")]
    return sorted(told) + sorted(set(notices) - set(told))


def assert_no_duplicate(stack: Stack) -> None:
    for queue in QUEUE_NAMES:
        seen = [
            (n.alarm_id, n.event, n.level) for n in stack.notices(queue) if n.event != "updated"
        ]
        assert len(seen) == len(set(seen)), f"duplicate notice in {queue}: {seen}"


@pytest.mark.parametrize("name", SAMPLE)
def test_two_shards_give_the_alarm_timeline_of_one_process(
    name: str,
    tmp_path: Path,
    mosquitto: MosquittoServer,
    redis_server: RedisServer,
    unique_prefix: str,
) -> None:
    """A shipped scenario played against one proximity process and against two shards: both
    meet the scenario's expected timeline, with the same notices and none twice."""
    scenario = load_scenario(name)
    timelines: dict[int, Timeline] = {}
    for shards in (1, 2):
        stack = checked_stack(
            tmp_path / f"shards-{shards}",
            scenario,
            mosquitto.url,
            redis_server.url,
            f"{unique_prefix}-{shards}",
            shards=shards,
        )
        try:
            report, result = run_checked(
                scenario, load_config(stack.config_dir, env={}), speed=SPEED
            )
            assert result.ok, f"{shards} shard(s): {result}\n{stack.logs()[-3000:]}"
            assert_no_duplicate(stack)
            timelines[shards] = timeline(stack, report.start_ms + scenario.duration_s * 1000)
        finally:
            stack.stop()
    assert timelines[2] == timelines[1]
    assert timelines[1], "the scenario raised no notice at all"


def _send(
    stack: Stack, sims: dict[str, SimDevice], fixes: int, distance_m: float
) -> dict[str, int]:
    """`fixes` live fixes from each device (offenders `distance_m` from their victim's home);
    returns each device's last seq."""
    offender_at = north_of(VICTIM_HOME, distance_m)
    ts = stack.clock()
    for _ in range(fixes):
        ts += 1000
        for device_id, sim in sims.items():
            sim.fix(ts, VICTIM_HOME if device_id.startswith("vic") else offender_at)
    return {d: sim.seq for d, sim in sims.items()}


def test_a_shard_killed_under_load_loses_nothing(make_stack: StackFactory) -> None:
    """Two shard processes; shard 2 (ank-1, vic-1) is killed -9 in the middle of a stream of
    fixes and started again: every fix is applied (by seq), the alarm opens once, and shard 1
    judged its pair throughout."""
    stack = make_stack(orders_toml=TWO_SHARDED_PAIRS)
    stack.start_in_process("gateway")
    stack.start_process("proximity", Shard(1, 2))
    stack.start_process("proximity", Shard(2, 2))
    devices = {d: stack.device(d) for d in ("ank-1", "vic-1", "ank-5", "vic-5")}
    _send(stack, devices, 20, 3000)
    stack.kill_process("proximity-2of2")
    _send(stack, devices, 20, 3000)  # shard 2's part waits in its persistent session
    stack.start_process("proximity", Shard(2, 2))  # waits out the dead process's lease
    last = _send(stack, devices, 5, 50)
    for device_id, seq in last.items():
        stack.wait_applied(device_id, seq)
    probation = stack.wait_notices(
        "probation",
        lambda ns: {n.order_id for n in ns if n.kind == "proximity_alarm"} == {"ORD-A", "ORD-B"},
        "both alarms",
    )
    wait_until(stack.inbox_settled, what="gateway applied every signal")
    assert_no_duplicate(stack)
    opened = [n.order_id for n in probation if n.event == "opened" and n.kind == "proximity_alarm"]
    assert sorted(opened) == ["ORD-A", "ORD-B"]


def _both_alarms_open_under_one_process(
    stack: Stack,
) -> tuple[dict[str, SimDevice], dict[str, int]]:
    """The gateway and one unsharded proximity process; both pairs walk in until both alarms
    are open. Returns the devices and the last seq each sent (applied)."""
    stack.start_in_process("gateway")
    stack.start_process("proximity")
    devices = {d: stack.device(d) for d in ("ank-1", "vic-1", "ank-5", "vic-5")}
    last = _send(stack, devices, 3, 50)
    for device_id, seq in last.items():
        stack.wait_applied(device_id, seq)
    stack.wait_notices(
        "probation",
        lambda ns: len({n.order_id for n in ns if n.kind == "proximity_alarm"}) == 2,
        "both alarms under one process",
    )
    return devices, last


def _more_fixes_open_nothing_again(stack: Stack, devices: dict[str, SimDevice]) -> None:
    """After a hand-over: more fixes of every device are applied (each device's committed seq is
    the last it sent), and each pair's alarm was opened once in all, never told twice."""
    last = _send(stack, devices, 3, 50)
    for device_id, seq in last.items():
        stack.wait_applied(device_id, seq)
        state = stack.device_state(device_id)
        assert state is not None and state.last_seq == seq, device_id
    wait_until(stack.inbox_settled, what="gateway applied every signal")
    opened = [
        n.order_id
        for n in stack.notices("probation")
        if n.event == "opened" and n.kind == "proximity_alarm"
    ]
    assert sorted(opened) == ["ORD-A", "ORD-B"]
    assert_no_duplicate(stack)


def test_one_shard_to_two_keeps_the_state(make_stack: StackFactory) -> None:
    """A re-shard as docs/architecture.md says, under traffic: the two new shards start (and
    subscribe) while the single process still runs, it stops, they adopt its state. Every fix
    is applied, each device's seq carries over, and an alarm open under one process is not
    opened again by the shard that takes its pair over."""
    stack = make_stack(orders_toml=TWO_SHARDED_PAIRS)
    devices, _ = _both_alarms_open_under_one_process(stack)
    new_leases = [stack.keys.proximity(Shard(index, 2)).lease for index in (1, 2)]
    for index in (1, 2):  # they subscribe, take their leases, wait for the old one to stop
        stack.start_process("proximity", Shard(index, 2), wait=False)
    wait_until(
        lambda: all(stack.redis.exists(lease) for lease in new_leases), what="new shards subscribed"
    )
    during = _send(stack, devices, 3, 50)
    stack.stop_processes("proximity")
    stack.wait_ready("proximity-1of2", "proximity-2of2")
    for device_id, seq in during.items():  # adopted, then the overlap applied (or a duplicate)
        stack.wait_applied(device_id, seq)
    assert stack.redis.exists(stack.keys.proximity(Shard(2, 2)).device_state("ank-1")) == 1
    assert stack.redis.exists(stack.keys.proximity(Shard(1, 2)).device_state("ank-5")) == 1
    _more_fixes_open_nothing_again(stack, devices)


def _as_before_shards(stack: Stack) -> None:
    """Move one stopped process's proximity keys to where versions before shards kept them (the
    values are the same: the state's format did not change), as an upgrade finds Redis."""
    r, own, old = stack.redis, stack.keys.proximity(Shard()), stack.keys.unsharded
    for device in [d.decode() for d in r.smembers(own.proximity_devices)]:
        r.rename(own.device_state(device), old.device_state(device))
    for key in r.scan_iter(match=f"{own.tag}:pair:*"):
        order_id, offender, victim = key.decode().split(":")[-3:]
        r.rename(key, old.pair_state(offender, order_id, victim))
    r.rename(own.proximity_devices, old.proximity_devices)
    for new, before in (
        (own.platform_state, old.platform_state),
        (own.command_outbox, old.command_outbox),
    ):
        if r.exists(new):
            r.rename(new, before)
    r.delete(own.layout_since, own.lease, own.commit_counter)


def test_the_state_of_a_version_before_shards_is_carried_to_two_shards(
    make_stack: StackFactory,
) -> None:
    """An upgrade: Redis holds what the single process of a version before shards wrote, its
    alarms open, and a signal it committed that the gateway has not applied yet (in that
    version's inbox). Two shards start on it: each device's seq carries over, the waiting signal
    is applied, and neither alarm opens again or is told twice."""
    stack = make_stack(orders_toml=TWO_SHARDED_PAIRS)
    devices, last = _both_alarms_open_under_one_process(stack)
    wait_until(stack.inbox_settled, what="gateway applied every signal")
    stack.stop_processes("proximity")
    _as_before_shards(stack)
    waiting = AlarmSignal(
        signal_id="before-shards-press",
        action="open",
        kind="aware_button",
        alarm_key="aware_button|ORD-A|vic-1",
        order_id="ORD-A",
        offender_device="ank-1",
        at=stack.clock(),
        reason="pressed before the upgrade",
        victim_device="vic-1",
    )
    stack.redis.xadd(stack.keys.unsharded.gateway_inbox, {"input": encode(waiting)})
    for index in (1, 2):
        stack.start_process("proximity", Shard(index, 2))
    stack.wait_ready("proximity-1of2", "proximity-2of2")
    for device_id, seq in last.items():
        state = stack.device_state(device_id)
        assert state is not None and state.last_seq == seq, device_id
    stack.wait_notices("police", lambda ns: any(n.kind == "aware_button" for n in ns), "press")
    _more_fixes_open_nothing_again(stack, devices)


def orders_toml(*orders: tuple[str, str, str]) -> str:
    """`[[order]]` tables of (id, offender device, victim device), alarm at 500 m."""
    return "".join(
        f'\n[[order]]\nid = "{order_id}"\noffender_device = "{offender}"\n'
        f'victim_devices = ["{victim}"]\nalarm_m = 500\n'
        for order_id, offender, victim in orders
    )


# A new order links vic-1 (shard 2's component, ank-1) to ank-5 (shard 1's): the joined
# component is named ank-1, so shard 2 takes ank-5, vic-5 and ORD-B over from shard 1.
JOINED = TWO_SHARDED_PAIRS + orders_toml(("ORD-C", "ank-5", "vic-1"))
# ank-1's component gains aa-0 and ank-5's aa-1: named after them, they swap shards.
SWAPPED = TWO_SHARDED_PAIRS + orders_toml(("ORD-X", "ank-1", "aa-0"), ("ORD-Y", "ank-5", "aa-1"))
# ORD-B ends and ORD-C gives ank-5 a victim of shard 2's component: ank-5 moves alone.
REPLACED = orders_toml(("ORD-A", "ank-1", "vic-1"), ("ORD-C", "ank-5", "vic-1"))
AS_BEFORE = {"ank-1": 2, "vic-1": 2, "ank-5": 1, "vic-5": 1}
ALL_ON_2 = dict.fromkeys(AS_BEFORE, 2)


class Traffic:
    """Fixes from every device, a round each 50 ms of wall time (one second of nabij's clock),
    offenders 50 m from their victims, on a thread of its own until `stop`."""

    def __init__(self, stack: Stack, sims: dict[str, SimDevice]) -> None:
        self._stack, self._sims = stack, sims
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ts = 0
        while not self._stop.wait(0.05):
            ts = max(ts + 1000, self._stack.clock())
            for device_id, sim in self._sims.items():
                sim.fix(
                    ts, VICTIM_HOME if device_id.startswith("vic") else north_of(VICTIM_HOME, 50)
                )

    def __enter__(self) -> Traffic:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _handover_mark(stack: Stack, shard: Shard) -> dict[str, int]:
    raw = stack.redis.hgetall(stack.keys.proximity(shard).handover)
    return {name.decode(): int(value) for name, value in raw.items()}


def _state_on(stack: Stack, shard: Shard, device_id: str) -> DeviceState | None:
    blob = stack.redis.get(stack.keys.proximity(shard).device_state(device_id))
    return None if blob is None else device_state_decoder.decode(device_id, blob)


def _every_seq_seen(state: DeviceState | None) -> bool:
    """Every seq the device sent so far was applied (its seen-window is full; seqs from 1)."""
    assert state is not None
    window = (1 << min(state.last_seq - 1, 64)) - 1
    return state.unseen_below & window == 0


def _handed_over_whole(
    stack: Stack,
    sims: dict[str, SimDevice],
    where: dict[str, int],
    *,
    opened: list[str],
    cleared: tuple[str, ...] = (),
) -> None:
    """After a hand-over under traffic: more fixes of every device are all applied on the shard
    `where` says judges it now, each seq once and none missing (the seen-window is full); ORD-A
    and ORD-B are still the alarms opened before (never cleared as order_ended, never opened
    again, still inside), the `opened` orders' alarms opened once, only the `cleared` ones
    cleared (as order_ended), and no notice was told twice."""
    last = _send(stack, sims, 3, 50)
    for device_id, seq in last.items():
        shard = Shard(where[device_id], 2)
        wait_until(
            lambda d=device_id, s=seq, at=shard: (
                (state := _state_on(stack, at, d)) is not None and state.last_seq == s
            ),
            what=f"{device_id} applied up to {seq} on {shard}",
        )
        assert _every_seq_seen(_state_on(stack, shard, device_id)), device_id
    wait_until(stack.inbox_settled, what="gateway applied every signal")
    probation = [n for n in stack.notices("probation") if n.kind == "proximity_alarm"]
    assert sorted(n.order_id for n in probation if n.event == "opened") == opened, probation
    assert [(n.order_id, n.cause) for n in probation if n.event == "cleared"] == [
        (order_id, "order_ended") for order_id in cleared
    ]
    for order_id, offender, victim in (("ORD-A", "ank-1", "vic-1"), ("ORD-B", "ank-5", "vic-5")):
        at = stack.keys.proximity(Shard(where[offender], 2))
        pair = stack.redis.get(at.pair_state(offender, order_id, victim))
        assert (
            pair is not None
            and pair_state_decoder.decode(pair, (order_id, offender, victim)).alarm.phase
            == "inside"
        )
    assert_no_duplicate(stack)


def _wait_adopted(stack: Stack, shard: Shard, version: int) -> None:
    wait_until(
        lambda: _handover_mark(stack, shard).get("adopted") == version,
        what=f"{shard} adopted version {version}",
        detail=stack.logs,
    )


def _two_shards_alarms_open(make_stack: StackFactory) -> tuple[Stack, dict[str, SimDevice]]:
    """Both shards and the gateway; both alarms open (ORD-A on shard 2, ORD-B on shard 1)."""
    stack = make_stack(orders_toml=TWO_SHARDED_PAIRS)
    stack.start_in_process("gateway")
    for index in (1, 2):
        stack.start_process("proximity", Shard(index, 2))
    sims = {d: stack.device(d) for d in ("ank-1", "vic-1", "ank-5", "vic-5")}
    for device_id, seq in _send(stack, sims, 3, 50).items():
        stack.wait_applied(device_id, seq)
    stack.wait_notices(
        "probation",
        lambda ns: {n.order_id for n in ns if n.kind == "proximity_alarm"} == {"ORD-A", "ORD-B"},
        "both alarms",
    )
    return stack, sims


def test_live_orders_joining_and_splitting_two_shards_components_hand_them_over_whole(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    """Both shards run, fixes flow, ORD-B's alarm is open on shard 1; a live orders version
    joins its component to shard 2's: shard 2 takes it over with its state. The next version
    ends the joining order: the component splits, and shard 1 takes ank-5 and ORD-B back."""
    stack, sims = _two_shards_alarms_open(make_stack)
    with Traffic(stack, sims):
        apply(stack, tmp_path, JOINED, "judge-a", "a second victim for ank-5")
        _wait_adopted(stack, Shard(2, 2), 2)
    assert _handover_mark(stack, Shard(1, 2)).get("released") == 2
    _handed_over_whole(stack, sims, ALL_ON_2, opened=["ORD-A", "ORD-B", "ORD-C"])
    logs = stack.logs()
    assert "handover_released" in logs and "handover_adopted" in logs
    with Traffic(stack, sims):
        apply(stack, tmp_path, TWO_SHARDED_PAIRS, "judge-a", "ORD-C quashed")
        _wait_adopted(stack, Shard(1, 2), 3)
    _handed_over_whole(
        stack, sims, AS_BEFORE, opened=["ORD-A", "ORD-B", "ORD-C"], cleared=["ORD-C"]
    )


def test_a_hand_over_survives_both_shards_killed_and_redis_restarted_mid_way(
    make_stack: StackFactory, tmp_path: Path, redis_server: RedisServer
) -> None:
    """The source (shard 1) is killed -9 before it hands over, the version is applied while it
    is down, and the destination (shard 2), waiting for it after its own release, is killed
    -9 too; Redis (AOF on) restarts; both shards start again: shard 2 resumes its step, shard 1
    steps on from its last version (its session's backlog judged first), hands over, and
    nothing is lost or told twice."""
    stack, sims = _two_shards_alarms_open(make_stack)
    with Traffic(stack, sims):
        stack.kill_process("proximity-1of2")
        apply(stack, tmp_path, JOINED, "judge-a", "a second victim for ank-5")
        wait_until(
            lambda: _handover_mark(stack, Shard(2, 2)).get("released") == 2,
            what="shard 2 subscribed and released",
            detail=stack.logs,
        )
        assert _handover_mark(stack, Shard(2, 2)).get("adopted") == 1
        stack.kill_process("proximity-2of2")
        redis_server.restart()
        stack.start_process("proximity", Shard(2, 2))
        stack.start_process("proximity", Shard(1, 2))
        _wait_adopted(stack, Shard(2, 2), 2)
    _handed_over_whole(stack, sims, ALL_ON_2, opened=["ORD-A", "ORD-B", "ORD-C"])
    assert "handover_resumed" in stack.logs()


def test_a_device_whose_order_ended_keeps_its_state_when_a_new_order_moves_it(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    """One version ends ORD-B and gives ank-5 a new victim, vic-1 (shard 2's): ank-5 moves to
    shard 2 without an order of its own coming along. ORD-B is cleared once, as order_ended
    (it did end); ank-5's state (its seq) carries over to shard 2, and the new order opens."""
    stack, sims = _two_shards_alarms_open(make_stack)
    with Traffic(stack, sims):
        apply(stack, tmp_path, REPLACED, "judge-a", "ORD-B replaced by ORD-C")
        _wait_adopted(stack, Shard(2, 2), 2)
    del sims["vic-5"]  # in no order now
    last = _send(stack, sims, 3, 50)
    for device_id, seq in last.items():
        wait_until(
            lambda d=device_id, s=seq: (
                (state := _state_on(stack, Shard(2, 2), d)) is not None and state.last_seq == s
            ),
            what=f"{device_id} applied up to {seq} on shard 2",
        )
    assert _every_seq_seen(_state_on(stack, Shard(2, 2), "ank-5"))  # here or on shard 1
    wait_until(stack.inbox_settled, what="gateway applied every signal")
    probation = [n for n in stack.notices("probation") if n.kind == "proximity_alarm"]
    assert sorted(n.order_id for n in probation if n.event == "opened") == [
        "ORD-A",
        "ORD-B",
        "ORD-C",
    ]
    assert [(n.order_id, n.cause) for n in probation if n.event == "cleared"] == [
        ("ORD-B", "order_ended")
    ]
    assert_no_duplicate(stack)


def test_two_components_swapping_shards_in_one_version_hand_over_both_ways(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    """A version gives each shard's component to the other (each gains a device that names it
    and hashes to the other shard): both shards hand over and take over in the same step, each
    releasing before it adopts, so neither waits for the other for ever; both open alarms carry
    over."""
    stack, sims = _two_shards_alarms_open(make_stack)
    with Traffic(stack, sims):
        apply(stack, tmp_path, SWAPPED, "judge-a", "a victim each")
        for index in (1, 2):
            _wait_adopted(stack, Shard(index, 2), 2)
    swapped = {d: 3 - shard for d, shard in AS_BEFORE.items()}
    _handed_over_whole(stack, sims, swapped, opened=["ORD-A", "ORD-B"])
