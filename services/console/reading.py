"""What the console reads from Redis, by role. The one place that decides which keys a session's
request touches: `police_facts` and the police queue are read for a police operator only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import msgspec
import redis

from nabij import order_store, streams
from nabij.contract import Notice, notice_decoder
from nabij.keys import Keys
from nabij.orders import Order
from services.alarm_gateway.core.alarms import AlarmRecord, police_facts_decoder, record_decoder
from services.console.core import (
    AlarmDetail,
    Role,
    Situation,
    alarm_detail,
    board,
    queue_of,
    visible,
)
from services.proximity.core.state import DeviceState, device_state_decoder
from services.proximity.layout import device_state_key


@dataclass(frozen=True, slots=True)
class Reader:
    client: redis.Redis
    keys: Keys

    def records(self) -> list[AlarmRecord]:
        return [
            record_decoder.decode(b) for b in streams.hash_values(self.client, self.keys.alarms)
        ]

    def board(self, role: Role, now_ms: int) -> list[Situation]:
        return board(self.records(), role, now_ms)

    def record(self, alarm_id: str, role: Role) -> AlarmRecord | None:
        """The open alarm if `role` may see it (an alarm it may not see does not exist for it)."""
        blob = self.client.hget(self.keys.alarms, alarm_id)
        record = None if blob is None else record_decoder.decode(blob)
        return record if record is not None and visible(record, role) else None

    def timeline(self, alarm_id: str, role: Role) -> tuple[list[Notice], int]:
        """The alarm's notices in `role`'s queue, oldest first, and how many could not be read."""
        notices: list[Notice] = []
        unreadable = 0
        for _entry_id, fields in streams.entries(self.client, self.keys.dispatch(queue_of(role))):
            try:
                notice = notice_decoder.decode(fields[b"notice"])
            except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
                unreadable += 1
                continue
            if notice.alarm_id == alarm_id:
                notices.append(notice)
        return notices, unreadable

    def detail(self, alarm_id: str, role: Role, now_ms: int) -> AlarmDetail | None:
        record = self.record(alarm_id, role)
        if record is None:
            return None
        notices, unreadable = self.timeline(alarm_id, role)
        police = None
        if role == "police":
            blob = self.client.hget(self.keys.police_facts, alarm_id)
            police = None if blob is None else police_facts_decoder.decode(blob)
        order = None if record.order_id is None else self.order(record.order_id)
        rings = [] if order is None else [order.alarm_m, order.pre_alert_ring_m]
        detail = alarm_detail(record, notices, role, now_ms, police=police, rings_m=rings)
        return msgspec.structs.replace(detail, unreadable_notices=unreadable)

    def orders(self) -> list[Order]:
        """The current version's orders, from the store the services follow (none before the
        first service start loaded orders.toml)."""
        current = order_store.read_version(self.client, self.keys)
        return [] if current is None else current.orders

    def order(self, order_id: str) -> Order | None:
        return next((o for o in self.orders() if o.id == order_id), None)

    def device(self, device_id: str) -> DeviceState | None:
        key = device_state_key(self.client, self.keys, self.orders(), device_id)
        blob = cast(bytes | None, self.client.get(key))
        return None if blob is None else device_state_decoder.decode(device_id, blob)

    def gateway_alive(self) -> bool:
        return bool(self.client.exists(self.keys.health("gateway")))

    def follow(self, role: Role, should_stop: Callable[[], bool]) -> Iterator[Notice | str]:
        """The notices that reach `role`'s queue from now on. A string stands for one that cannot
        be read (the fault, told to the operator), "" for a quiet second: the caller checks the
        session and the gateway between steps."""
        stream = self.keys.dispatch(queue_of(role))
        newest = streams.latest(self.client, stream, 1)
        after: bytes | str = newest[0][0] if newest else "0-0"
        while not should_stop():
            batch = streams.read(self.client, stream, after_id=after, count=100, block_ms=1000)
            if not batch:
                yield ""
            for entry_id, fields in batch:
                after = entry_id
                try:
                    yield notice_decoder.decode(fields[b"notice"])
                except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
                    yield f"a notice in the queue could not be read (entry {entry_id!r})"
