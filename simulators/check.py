"""`--check`: compare the notices nabij produced during a run with the scenario's `[[expect]]`.

Time model. nabij runs on the scenario's clock (settings `[clock]`, see `simulators.timescale`)
and the run plays on the same one, so a notice's `at` (nabij's clock) is scenario time directly:
`(at - start_ms) / 1000` seconds, `start_ms` being the clock at scenario time 0
(`RunReport.start_ms`). Processing latency is stretched by the speed (50 ms at x100 is 5
scenario seconds): expectation windows leave room for it.

Only notices of the scenario's orders that were appended after the run started count, so other
traffic on the same nabij, and earlier runs, do not disturb a check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import redis

from nabij import streams
from nabij.config import Config
from nabij.contract import QUEUE_NAMES, Notice, QueueName, notice_decoder
from nabij.failures import NabijError
from nabij.keys import Keys
from simulators.runner import RunReport, ScenarioRun
from simulators.scenario import ExpectSpec, Scenario
from simulators.timescale import timescale_problems


@dataclass(frozen=True, slots=True)
class SeenNotice:
    queue: QueueName
    notice: Notice
    scenario_s: float
    happened_s: float | None = None
    """When a late notice says it really happened (`happened_at`), in scenario seconds."""


@dataclass(frozen=True, slots=True)
class Outcome:
    index: int
    expect: ExpectSpec
    matched: tuple[SeenNotice, ...]
    window: tuple[float, float]

    @property
    def ok(self) -> bool:
        count = len(self.matched)
        at_most = self.expect.at_most
        return count >= self.expect.at_least and (at_most is None or count <= at_most)

    def describe(self) -> str:
        e = self.expect
        queue = e.queue or "any queue"
        bounds = f"{e.at_least}" if e.at_most == e.at_least else f"{e.at_least}..{e.at_most or 'n'}"
        times = ", ".join(f"{n.scenario_s:.0f}" for n in self.matched) or "none"
        mark = "ok  " if self.ok else "FAIL"
        note = f"  ({e.note})" if e.note else ""
        happened = ""
        if e.happened_after_s is not None or e.happened_before_s is not None:
            low, high = e.happened_after_s or 0.0, e.happened_before_s
            happened = f", happened in [{low:g}, {'end' if high is None else f'{high:g}'}]"
        return (
            f"{mark} expect[{self.index}] {e.kind} {e.event} on {queue} in "
            f"[{self.window[0]:g}, {self.window[1]:g}] s{happened}: want {bounds}, "
            f"got {len(self.matched)} at {times} s{note}"
        )


@dataclass(slots=True)
class CheckResult:
    scenario: str
    speed: float
    outcomes: list[Outcome]
    notices: list[SeenNotice] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def __str__(self) -> str:
        verdict = "passed" if self.ok else "FAILED"
        failed = sum(not o.ok for o in self.outcomes)
        lines = [
            f"check of scenario {self.scenario} at x{self.speed:g} {verdict}: "
            f"{len(self.outcomes) - failed}/{len(self.outcomes)} expectations hold"
        ]
        lines.extend(f"  {o.describe()}" for o in self.outcomes)
        lines.append(f"  notices seen ({len(self.notices)}), scenario seconds:")
        lines.extend(
            f"    {n.scenario_s:7.0f} s  {n.queue:<9} {n.notice.kind} {n.notice.event} "
            f"level {n.notice.level} ({n.notice.offender_device})"
            for n in self.notices
        )
        return "\n".join(lines)


def to_scenario_s(at_ms: int, start_ms: int) -> float:
    """Scenario seconds of a nabij-clock epoch ms, for a run whose time 0 was `start_ms`."""
    return (at_ms - start_ms) / 1000.0


class DispatchWatch:
    """Reads what the dispatch queues received after `mark()`."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._marks: dict[QueueName, bytes] = {}

    def mark(self) -> None:
        """Remember the end of each queue now: later reads start after it."""
        for queue in QUEUE_NAMES:
            last = streams.latest(self.client, self.keys.dispatch(queue), 1)
            self._marks[queue] = last[-1][0] if last else b"0-0"

    def settle(self, quiet_s: float, timeout_s: float = 30.0) -> None:
        """Wait until the proximity service has added no signal to the gateway's inbox for
        `quiet_s` and the gateway has applied all of them (a loaded machine takes longer than a
        fixed pause would allow). Escalation reminders may go on; they are not waited for."""
        deadline = time.monotonic() + timeout_s
        last_id, quiet_since = b"", time.monotonic()
        while time.monotonic() < deadline:
            newest, applied = self._inbox_state()
            if newest != last_id or not applied:
                last_id, quiet_since = newest, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return
            time.sleep(0.05)

    def _inbox_state(self) -> tuple[bytes, bool]:
        """The ids of the newest signal ever added to each shard's inbox, and whether every
        signal was applied."""
        newest, applied = [], True
        for inbox in streams.members(self.client, self.keys.signal_inboxes):
            try:
                info = cast(dict[str, object], self.client.xinfo_stream(inbox))
                groups = cast(list[dict[str, object]], self.client.xinfo_groups(inbox))
            except redis.ResponseError:
                continue  # no inbox yet: nothing to apply
            applied &= all(g.get("pending") == 0 and g.get("lag") in (0, None) for g in groups)
            newest.append(cast(bytes, info.get("last-generated-id", b"")))
        return b",".join(newest), applied

    def since_mark(self) -> list[tuple[QueueName, Notice]]:
        out: list[tuple[QueueName, Notice]] = []
        for queue in QUEUE_NAMES:
            start = b"(" + self._marks.get(queue, b"0-0")
            entries = cast(
                list[streams.StreamEntry],
                self.client.xrange(self.keys.dispatch(queue), min=start),
            )
            for _id, fields in entries:
                out.append((queue, notice_decoder.decode(fields[b"notice"])))
        return out


def evaluate(
    scenario: Scenario,
    notices: Sequence[tuple[QueueName, Notice]],
    start_ms: int,
    speed: float,
) -> CheckResult:
    """Match the scenario's notices (by order id) against each expectation."""
    order_ids = {order.id for order in scenario.order}
    seen = sorted(
        (
            SeenNotice(
                queue,
                notice,
                to_scenario_s(notice.at, start_ms),
                None if notice.happened_at is None else to_scenario_s(notice.happened_at, start_ms),
            )
            for queue, notice in notices
            if notice.order_id in order_ids
        ),
        key=lambda n: (n.scenario_s, n.queue),
    )
    outcomes = []
    for index, expect in enumerate(scenario.expect):
        window = (
            expect.after_s,
            expect.before_s if expect.before_s is not None else scenario.duration_s,
        )
        matched = tuple(
            n
            for n in seen
            if n.notice.kind == expect.kind
            and n.notice.event == expect.event
            and (expect.queue is None or n.queue == expect.queue)
            and window[0] <= n.scenario_s <= window[1]
            and _happened_in(n, expect)
        )
        if expect.queue is None:
            # One step of an alarm goes to every queue told so far: count it once.
            unique = {
                (n.notice.alarm_id, n.notice.event, n.notice.level, n.notice.at): n for n in matched
            }
            matched = tuple(unique.values())
        outcomes.append(Outcome(index, expect, matched, window))
    return CheckResult(scenario.name, speed, outcomes, seen)


def _happened_in(seen: SeenNotice, expect: ExpectSpec) -> bool:
    """Whether the notice says it happened in the expectation's `happened_*` window (if any)."""
    low, high = expect.happened_after_s, expect.happened_before_s
    if low is None and high is None:
        return True
    return seen.happened_s is not None and (
        (low is None or low <= seen.happened_s) and (high is None or seen.happened_s <= high)
    )


class TimescaleError(NabijError):
    """nabij's configuration cannot reproduce the scenario's timeline at this speed."""


def run_checked(
    scenario: Scenario,
    config: Config,
    *,
    speed: float | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[str], None] | None = None,
    settle_s: float = 1.0,
) -> tuple[RunReport, CheckResult]:
    """Play `scenario` against the nabij that `config` describes, on its clock, and check its
    notices. `speed`, if given, must be that clock's speed.

    Raises TimescaleError (before anything runs) if nabij's clock, timers or orders do not fit."""
    problems = timescale_problems(config.settings, scenario, speed)
    configured = {order.id for order in config.orders}
    problems.extend(
        f"order {order.id} of the scenario is not in {config.directory}/orders.toml"
        for order in scenario.order
        if order.id not in configured
    )
    if problems:
        raise TimescaleError("; ".join(problems))
    clock = config.settings.clock
    client = redis.Redis.from_url(config.settings.redis.url)
    try:
        watch = DispatchWatch(client, Keys(config.settings.redis.key_prefix))
        watch.mark()
        run = ScenarioRun(
            scenario,
            config.settings.mqtt.url,
            config.settings.mqtt.topic_prefix,
            speed=clock.speed,
            anchor_ms=clock.anchor_ms,
            on_progress=on_progress,
        )
        report = run.run(stop)
        # The last fixes of the run are still being processed when the devices stop.
        watch.settle(quiet_s=settle_s)
        result = evaluate(scenario, watch.since_mark(), report.start_ms, clock.speed)
    finally:
        client.close()
    return report, result
