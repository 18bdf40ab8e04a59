"""What a dispatcher or probation officer does from a terminal: list, follow, acknowledge, resolve.

Humans never write alarm records themselves: `ack` and `resolve` append a request to the gateway's
inbox (the gateway is the single writer) and then wait briefly to show the outcome.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from nabij import streams
from nabij.contract import (
    AckRequest,
    Notice,
    QueueName,
    ResolveRequest,
    encode,
    notice_decoder,
)
from nabij.failures import NabijError
from nabij.keys import Keys
from services.alarm_gateway.core.alarms import AlarmRecord, record_decoder

_EVENT_COLOURS = {
    "opened": "\033[1;31m",
    "escalated": "\033[1;35m",
    "updated": "\033[33m",
    "acknowledged": "\033[36m",
    "cleared": "\033[32m",
    "resolved": "\033[1;32m",
}
_RESET = "\033[0m"


class OperatorError(NabijError):
    """A request a human made cannot be carried out; the message says why."""


@dataclass(frozen=True, slots=True)
class Outcome:
    applied: bool
    message: str


def open_alarms(client: redis.Redis, keys: Keys) -> list[AlarmRecord]:
    records = [record_decoder.decode(blob) for blob in streams.hash_values(client, keys.alarms)]
    return sorted(records, key=lambda r: (r.priority, r.opened_at))


def request(
    client: redis.Redis,
    keys: Keys,
    kind: type[AckRequest] | type[ResolveRequest],
    alarm_id: str,
    *,
    by: str,
    note: str | None,
    now_ms: int,
) -> AckRequest | ResolveRequest:
    """Append an ack or resolve request for an open alarm to the gateway's inbox."""
    _require_open(client, keys, alarm_id)
    request = kind(f"{kind.__struct_config__.tag}-{uuid.uuid4().hex}", alarm_id, by, now_ms, note)
    client.xadd(keys.gateway_inbox, {"input": encode(request)})
    return request


def _require_open(client: redis.Redis, keys: Keys, alarm_id: str) -> None:
    if not client.hexists(keys.alarms, alarm_id):
        raise OperatorError(f"no open alarm {alarm_id} (run `nabij alarms` to list them)")


def wait_for(
    check: Callable[[], bool], timeout_s: float, sleep: Callable[[float], None] = time.sleep
) -> bool:
    """Poll `check` until it holds or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        sleep(0.1)
    return check()


def ack_applied(client: redis.Redis, keys: Keys, alarm_id: str) -> bool:
    blob = client.hget(keys.alarms, alarm_id)
    return blob is None or record_decoder.decode(blob).acknowledged_by is not None


def resolve_applied(client: redis.Redis, keys: Keys, alarm_id: str) -> bool:
    return not client.hexists(keys.alarms, alarm_id)


def follow(
    client: redis.Redis,
    keys: Keys,
    queue: QueueName,
    *,
    from_start: bool,
    group: str | None = None,
    consumer: str = "terminal",
    block_ms: int = 1000,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[Notice]:
    """Yield the notices of one dispatch queue as they arrive.

    Without `group` this only watches. With `group` it reads as a member of that consumer group
    (created on first use), one notice at a time, and acknowledges each once it has been shown
    and the next is asked for; a console that restarts under the same consumer name first gets
    back what it had been given but had not finished showing. Each notice is seen once per group.
    """
    stream = keys.dispatch(queue)
    if group is None:
        after: bytes | str = "0" if from_start else "$"
        while not should_stop():
            batch = streams.read(client, stream, after_id=after, count=100, block_ms=block_ms)
            for entry_id, fields in batch:
                after = entry_id
                yield notice_decoder.decode(fields[b"notice"])
        return
    try:
        client.xgroup_create(stream, group, id="0" if from_start else "$", mkstream=True)
    except redis.ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise
    start: bytes | str = "0"  # this consumer's unfinished entries first, then new ones
    while not should_stop():
        batch = streams.read_group(
            client, group, consumer, stream, start_id=start, count=1, block_ms=block_ms
        )
        if not batch:
            start = ">"
            continue
        entry_id, fields = batch[0]
        yield notice_decoder.decode(fields[b"notice"])
        client.xack(stream, group, entry_id)


def format_notice(notice: Notice, queue: QueueName, *, colour: bool) -> str:
    """One line a dispatcher can read at a glance."""
    clock = datetime.fromtimestamp(notice.at / 1000, tz=UTC).strftime("%H:%M:%S")
    event = notice.event.upper()
    if colour:
        event = f"{_EVENT_COLOURS.get(notice.event, '')}{event:<12}{_RESET}"
    else:
        event = f"{event:<12}"
    parties = notice.offender_device + (
        f" / {notice.victim_device}" if notice.victim_device else ""
    )
    extra = f" by {notice.by}" if notice.by else ""
    return (
        f"{clock} [{queue:<9}] {event} P{notice.priority} L{notice.level} {notice.kind:<19} "
        f"{notice.order_id} {parties}  {notice.alarm_id}{extra}  {notice.reason}"
    )


def format_alarm(record: AlarmRecord) -> str:
    opened = datetime.fromtimestamp(record.opened_at / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    state = (
        f"acknowledged by {record.acknowledged_by}" if record.acknowledged_by else "unacknowledged"
    )
    return (
        f"{record.alarm_id}  P{record.priority} L{record.level}  {record.kind:<19} "
        f"{record.order_id}  opened {opened}Z  {record.condition}, {state}  "
        f"queues: {','.join(record.queues)}"
    )
