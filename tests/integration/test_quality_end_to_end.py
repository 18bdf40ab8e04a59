"""Quality cases end to end: the proximity service over real Mosquitto and Redis decides exactly
what the core-only run of the same case decides (docs/quality.md, "End to end")."""

from __future__ import annotations

import msgspec
import pytest

from nabij.contract import AlarmSignal, gateway_input_decoder
from simulators.quality.case import START_MS, Case, CaseSpec, build
from simulators.quality.families import FAMILIES, case_spec
from simulators.quality.judge import JUDGED_KINDS, alarms, judge
from simulators.quality.run import core_signals
from tests.integration.conftest import StackFactory
from tests.integration.stack import ManualClock, Stack

pytestmark = pytest.mark.integration

SEED = 2026
MAX_RECORDS = 160
"""A short case per family keeps the test to seconds: every message is committed in turn."""
FAMILY_NAMES = ("approach_bike", "coverage_gap", "urban_canyon", "zone_crossing")


def short_case(family: str) -> Case:
    """The first case of `family` under `SEED` with at most `MAX_RECORDS` messages."""
    names = list(FAMILIES)
    index = names.index(family)
    while True:
        case = build(case_spec(index, SEED))
        if len(case.records) <= MAX_RECORDS:
            return case
        index += len(names)


def orders_toml(spec: CaseSpec) -> str:
    zones = "".join(
        f'\n[[order.zone]]\nname = "{z.name}"\nlat = {z.lat}\nlon = {z.lon}\n'
        f"radius_m = {z.radius_m}\n"
        for z in spec.zones
    )
    return (
        f'[[order]]\nid = "{spec.order_id}"\noffender_device = "{spec.offender.device_id}"\n'
        f'victim_devices = ["{spec.victim.device_id}"]\nalarm_m = {spec.alarm_m}\n'
        f"pre_alert_m = {spec.pre_alert_m}\n{zones}"
    )


def last_seq(payload: bytes) -> int:
    body = msgspec.json.decode(payload)
    return max(f["seq"] for f in body) if isinstance(body, list) else int(body["seq"])


def play(stack: Stack, clock: ManualClock, case: Case) -> list[AlarmSignal]:
    """Every message at its received time, each committed before the clock moves on; then the
    signals the service wrote to the gateway's inbox (no gateway runs to consume them)."""
    devices = {
        d.device_id: stack.device(d.device_id) for d in (case.spec.offender, case.spec.victim)
    }
    for record in case.records:
        device_id = record.topic.split("/")[-2]
        clock.advance_to(record.received_ms)
        devices[device_id].publish_raw("fix", record.payload)
        stack.wait_applied(device_id, last_seq(record.payload))
    entries = stack.redis.xrange(stack.shard_keys.gateway_inbox)
    signals = [gateway_input_decoder.decode(fields[b"input"]) for _id, fields in entries]
    return [s for s in signals if isinstance(s, AlarmSignal)]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_the_service_decides_a_case_exactly_as_the_core_only_run(
    make_stack: StackFactory, family: str
) -> None:
    """One short case of the family, message by message through Mosquitto into the proximity
    service and its Redis commits: the ring signals (open, update, clear, with their times,
    distances and reasons) are the core-only run's, decision for decision, and so is the score."""
    case = short_case(family)
    clock = ManualClock(START_MS)
    stack = make_stack(orders_toml=orders_toml(case.spec))
    stack.start_in_process("proximity", clock=clock)

    served = [s for s in play(stack, clock, case) if s.kind in JUDGED_KINDS]
    core = [
        s
        for s in core_signals(case)
        if s.kind in JUDGED_KINDS and s.at <= case.records[-1].received_ms
    ]

    assert core, f"{case.spec.case_id} raises no ring signal: nothing compared"
    assert [msgspec.to_builtins(s) for s in served] == [msgspec.to_builtins(s) for s in core]
    settings = case.config.settings.proximity
    assert alarms(served) == alarms(core)
    assert judge(case.spec, case.truth, served, settings) == judge(
        case.spec, case.truth, core, settings
    )
