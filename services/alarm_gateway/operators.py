"""What a dispatcher or probation officer does from a terminal: list, follow, acknowledge, resolve.

Humans never write alarm records themselves: `ack` and `resolve` append a request to the gateway's
request stream (the gateway is the single writer) and then wait for the outcome the gateway
writes, to tell what really happened. Everything shown is rendered with `safe`: text from Redis
never reaches the terminal as control characters.
"""

from __future__ import annotations

import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import redis

from nabij import streams
from nabij.contract import (
    AckRequest,
    Notice,
    QueueName,
    RequestOutcome,
    RequestVia,
    ResolveRequest,
    encode,
    explain_request_error,
    notice_decoder,
    outcome_decoder,
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
    """A request a human made cannot be sent; the message says why."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the gateway did with a request, told as the operator should read it."""

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
    via: RequestVia = "cli",
) -> AckRequest | ResolveRequest:
    """Append an ack or resolve request to the gateway's request stream.

    Raises `OperatorError` with the rule broken when `by`, `note` or `alarm_id` is not what the
    contract takes: nothing is sent then (the gateway would refuse it anyway).
    """
    fields = {
        "request_id": f"{kind.__struct_config__.tag}-{uuid.uuid4().hex}",
        "alarm_id": alarm_id,
        "by": by,
        "via": via,
        "at": now_ms,
        "note": note,
    }
    try:
        request = msgspec.convert(fields, kind)
    except msgspec.ValidationError as err:
        raise OperatorError(explain_request_error(err)) from err
    client.xadd(keys.human_requests, {"input": encode(request)})
    return request


def wait_outcome(
    client: redis.Redis,
    keys: Keys,
    request_id: str,
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> RequestOutcome | None:
    """The gateway's outcome of a request, polled until it comes or the timeout passes."""
    key = keys.request_outcome(request_id)
    deadline = time.monotonic() + timeout_s
    while True:
        blob = client.get(key)
        if blob is not None:
            return outcome_decoder.decode(blob)
        if time.monotonic() >= deadline:
            return None
        sleep(0.1)


def tell(sent: AckRequest | ResolveRequest, outcome: RequestOutcome) -> Outcome:
    """The truth about one request: done, by whom, or why not."""
    alarm = sent.alarm_id
    if outcome.status == "applied":
        done = "acknowledged" if isinstance(sent, AckRequest) else "resolved"
        by = outcome.acknowledged_by if isinstance(sent, AckRequest) else sent.by
        return Outcome(True, safe(f"{alarm} {done} by {by}"))
    if outcome.status == "already_acknowledged":
        since = _clock(outcome.acknowledged_at) if outcome.acknowledged_at else "?"
        return Outcome(
            False,
            safe(
                f"{alarm} not acknowledged by {sent.by}: already acknowledged by "
                f"{outcome.acknowledged_by} at {since}Z"
            ),
        )
    if outcome.status == "no_such_alarm":
        return Outcome(
            False,
            safe(
                f"{alarm}: no open alarm has this id (never opened, or resolved already; "
                "`nabij alarms` lists them)"
            ),
        )
    return Outcome(False, safe(f"{alarm}: refused by the gateway: {outcome.detail}"))


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
    streams.ensure_group(client, stream, group, start_id="0" if from_start else "$")
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


# Shown escaped: controls (C0, DEL, C1), format characters (bidi overrides, zero widths), line and
# paragraph separators, surrogates, private use and unassigned code points.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def safe(text: str) -> str:
    """`text` with every character that could move the cursor, forge a line or reorder what is
    shown written as a Python escape (`\\n`, `\\x1b`, `\\u202e`)."""
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if unicodedata.category(c) in _UNSAFE_CATEGORIES
        else c
        for c in text
    )


def _clock(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).strftime("%H:%M:%S")


def format_notice(notice: Notice, queue: QueueName, *, colour: bool) -> str:
    """One line a dispatcher can read at a glance; every field from Redis rendered `safe`."""
    clock = _clock(notice.at)
    event = notice.event.upper()
    if colour:
        event = f"{_EVENT_COLOURS.get(notice.event, '')}{event:<12}{_RESET}"
    else:
        event = f"{event:<12}"
    if notice.order_id is None:  # a platform notice: the orders it cannot see
        parties = f"platform ({len(notice.orders)} orders)"
    else:
        parties = f"{notice.order_id} {notice.offender_device}" + (
            f" / {notice.victim_device}" if notice.victim_device else ""
        )
    extra = f" by {notice.by}" if notice.by else ""
    details = safe(
        f"P{notice.priority} L{notice.level} {notice.kind:<19} "
        f"{parties}  {notice.alarm_id}{extra}  {notice.reason}"
    )
    return f"{clock} [{queue:<9}] {event} {details}"


def format_alarm(record: AlarmRecord) -> str:
    opened = datetime.fromtimestamp(record.opened_at / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    state = (
        f"acknowledged by {record.acknowledged_by} ({record.acknowledged_via or '?'})"
        if record.acknowledged_by
        else "unacknowledged"
    )
    return safe(
        f"{record.alarm_id}  P{record.priority} L{record.level}  {record.kind:<19} "
        f"{record.order_id or 'platform'}  opened {opened}Z  {record.condition}, {state}  "
        f"queues: {','.join(record.queues)}"
    )
