"""Orders as live data: every change is a new, numbered version in Redis with who, when and why.

A version holds every order (zones read from their GeoJSON files already), so a service needs
nothing but Redis to apply it, and the history is a list of complete, never rewritten versions.
A new version is written only if the current one is still the one its author read
(compare-and-set with WATCH/MULTI): two operators applying at once never merge unseen.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import redis
from pydantic import Field

from nabij.evidence.chain import Entry
from nabij.evidence.store import SharedLog
from nabij.failures import NabijError
from nabij.keys import Keys
from nabij.orders import AnyOrder, Order
from nabij.settings import StrictModel

SYSTEM_AUTHOR = "nabij"
EVIDENCE_WRITER = "orders"
"""The evidence chain of order changes, shared by every process that applies a version."""
FIRST_START_REASON = "first start with an empty store: orders.toml loaded as version 1"


class OrdersVersion(StrictModel):
    version: int = Field(ge=1)
    by: str = Field(min_length=1)
    at: str
    """ISO 8601 with offset, when the version was written."""
    reason: str = Field(min_length=1)
    apply_id: str
    """Random per apply: tells whether an apply whose reply was lost landed."""
    orders: list[Order]

    def order(self, order_id: str) -> Order | None:
        return next((o for o in self.orders if o.id == order_id), None)


class StaleVersionError(NabijError):
    """Someone applied another version since this one was read: re-read and decide again."""

    def __init__(self, expected: int, current: int) -> None:
        self.expected, self.current = expected, current
        super().__init__(
            f"the orders changed meanwhile (you read version {expected}, now {current}): "
            "re-read them and apply again"
        )


@dataclass(frozen=True, slots=True)
class OrderChange:
    order_id: str
    kind: str
    """"added", "ended" or "changed"."""
    fields: tuple[str, ...] = ()


def changes(old: Sequence[AnyOrder], new: Sequence[AnyOrder]) -> list[OrderChange]:
    """What a new set of orders changes, order by order (for `--dry-run` and the services): of
    one kind, validated or held, as an `Order` never equals a `HeldOrder`."""
    before = {o.id: o for o in old}
    after = {o.id: o for o in new}
    out = [OrderChange(i, "ended") for i in before if i not in after]
    for order_id, order in after.items():
        previous = before.get(order_id)
        if previous is None:
            out.append(OrderChange(order_id, "added"))
        elif previous != order:
            fields = tuple(
                name
                for name in Order.model_fields
                if getattr(previous, name) != getattr(order, name)
            )
            out.append(OrderChange(order_id, "changed", fields))
    return sorted(out, key=lambda c: c.order_id)


def describe(change: OrderChange, old: Sequence[Order], new: Sequence[Order]) -> list[str]:
    """Lines of a diff, `- old` / `+ new` per changed field (positions of zones included:
    orders are operator-facing, never offender-facing)."""
    if change.kind != "changed":
        return [f"{'+' if change.kind == 'added' else '-'} order {change.order_id} {change.kind}"]
    before = next(o for o in old if o.id == change.order_id)
    after = next(o for o in new if o.id == change.order_id)
    lines = [f"~ order {change.order_id} changed"]
    for name in change.fields:
        lines.append(f"    {name}: - {_short(getattr(before, name))}")
        lines.append(f"    {name}: + {_short(getattr(after, name))}")
    return lines


def _short(value: object) -> str:
    if not isinstance(value, tuple):
        return repr(value)
    # An order's arrays are tuples; the diff shows them as the file writes them, lists.
    if value and isinstance(value[0], StrictModel):
        return repr([item.model_dump(exclude={"geometry", "corridor_geometry"}) for item in value])
    return repr(list(value))


def read_version(
    client: redis.Redis, keys: Keys, number: int | None = None
) -> OrdersVersion | None:
    """Version `number`, or the current one; None when the store is empty or has no such one."""
    if number is None:
        raw_number = client.get(keys.orders_version)
        if raw_number is None:
            return None
        number = int(raw_number)
    raw = client.hget(keys.order_versions, str(number))
    return None if raw is None else OrdersVersion.model_validate_json(raw)


def history(client: redis.Redis, keys: Keys) -> list[OrdersVersion]:
    """Every version, oldest first."""
    raw = client.hgetall(keys.order_versions)
    versions = [OrdersVersion.model_validate_json(blob) for blob in raw.values()]
    return sorted(versions, key=lambda v: v.version)


def next_version(
    orders: Sequence[Order], *, expected: int, by: str, reason: str, now_ms: int
) -> OrdersVersion:
    """The version that follows version `expected` (0: the store is empty)."""
    return OrdersVersion(
        version=expected + 1,
        by=by,
        at=datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(timespec="milliseconds"),
        reason=reason,
        apply_id=secrets.token_hex(8),
        orders=list(orders),
    )


class ChangeRecord(msgspec.Struct, frozen=True):
    """One order's change in one version, as the evidence trail keeps it."""

    version: int
    by: str
    at: str
    reason: str
    change: str
    fields: tuple[str, ...]
    order: msgspec.Raw | None
    """The order as of this version (JSON), absent when it ended."""


def change_entries(old: Sequence[Order], version: OrdersVersion) -> list[Entry]:
    """One evidence record per order the version changes (each names only its own order)."""
    at_ms = _ms(version.at)
    entries = []
    for change in changes(old, version.orders):
        order = version.order(change.order_id)
        record = ChangeRecord(
            version.version,
            version.by,
            version.at,
            version.reason,
            change.kind,
            change.fields,
            None if order is None else msgspec.Raw(order.model_dump_json().encode()),
        )
        entries.append(Entry("order", at_ms, (change.order_id,), msgspec.json.encode(record)))
    return entries


def apply(
    client: redis.Redis, keys: Keys, version: OrdersVersion, evidence: SharedLog | None = None
) -> OrdersVersion:
    """Write `version` in one transaction (the services poll the version number and follow),
    with its evidence records when `evidence` is given; StaleVersionError if the current
    version is no longer the one before it."""
    expected = version.version - 1
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(keys.orders_version)  # type: ignore[no-untyped-call]  # redis-py stubs
            if evidence is not None:
                # A WATCH of its own: under the ACL each key family is its own grant, and a
                # command naming keys of two grants is refused.
                pipe.watch(evidence.watched)  # type: ignore[no-untyped-call]  # as above
            raw = pipe.get(keys.orders_version)
            current = int(raw) if raw is not None else 0
            if current != expected:
                raise StaleVersionError(expected, current)
            if evidence is not None:
                previous = read_version(pipe, keys, expected) if expected else None
                start = evidence.head(pipe)
            pipe.multi()
            pipe.hset(keys.order_versions, str(version.version), version.model_dump_json())
            pipe.set(keys.orders_version, version.version)
            if evidence is not None:
                old = previous.orders if previous is not None else []
                evidence.write(pipe, start, change_entries(old, version), _ms(version.at))
            pipe.execute()
        except redis.WatchError:
            # redis-py also says WatchError when the connection broke while watching (the EXEC or
            # its reply lost): whether this version landed is told by its apply id, not the error.
            if landed(client, keys, version):
                return version
            raw = client.get(keys.orders_version)
            current = int(raw) if raw is not None else 0
            if current == expected:  # nobody else wrote: the connection broke, nothing landed
                raise redis.ConnectionError("connection lost before the transaction ran") from None
            raise StaleVersionError(expected, current) from None
    return version


def _ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


def landed(client: redis.Redis, keys: Keys, version: OrdersVersion) -> bool:
    """Whether an apply whose reply was lost was written (its version carries its apply id)."""
    stored = read_version(client, keys, version.version)
    return stored is not None and stored.apply_id == version.apply_id


def bootstrap(
    client: redis.Redis,
    keys: Keys,
    orders: Sequence[Order],
    now_ms: int,
    evidence: SharedLog | None = None,
) -> OrdersVersion:
    """The current version; on an empty store, `orders` (from orders.toml) become version 1.
    Two services starting at once both end up with the one that won."""
    existing = read_version(client, keys)
    if existing is not None:
        return existing
    try:
        first = next_version(
            orders, expected=0, by=SYSTEM_AUTHOR, reason=FIRST_START_REASON, now_ms=now_ms
        )
        return apply(client, keys, first, evidence)
    except StaleVersionError:
        won = read_version(client, keys)
        assert won is not None  # someone else's version 1 landed
        return won
