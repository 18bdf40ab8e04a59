"""Redis ACL users, one per component, with the least rights each needs, derived from `Keys`.

Every key pattern comes from `nabij.keys.Keys`, so the rules cannot drift from the keys the code
uses. Each grant is a Redis 7 selector `(keys commands)`: a command is allowed only on the keys of
the grant that names it, so "may append to the inbox" does not bring "may delete from it".
`%R~` grants read-only and `%W~` write-only access to a key pattern; `~` both.

`nabij redis-acl` renders the file (passwords as SHA-256, `#...`); a component without a password
configured gets its rules with the user `off`, and the `default` user is switched off: an
unauthenticated client can do nothing. The file holds only nabij's users: an administrator adds
their own line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from nabij.contract import QueueName
from nabij.keys import Keys
from nabij.settings import REDIS_ROLES, RedisRole

# A connection needs these whatever it does: liveness pings (redis-py pings an idle connection
# before use) and the transactions of the exactly-once commits.
KEYLESS_COMMANDS: Final = ("ping", "multi", "exec", "discard", "unwatch")
# A lease (`services.shell.lease`): taken, checked under WATCH, renewed and released.
LEASE_COMMANDS: Final = ("get", "set", "watch", "pexpire", "del")
ANY: Final = "*"


@dataclass(frozen=True, slots=True)
class Grant:
    """`commands` on keys matching `patterns`, with `access` "" (read and write), "R" or "W"."""

    commands: tuple[str, ...]
    patterns: tuple[str, ...]
    access: str = ""

    def render(self) -> str:
        selector = f"%{self.access}~" if self.access else "~"
        keys = " ".join(selector + pattern for pattern in self.patterns)
        return f"({keys} {' '.join('+' + command for command in self.commands)})"


def glob_escape(text: str) -> str:
    """`text` matched literally by a Redis glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def grants(prefix: str) -> dict[RedisRole, list[Grant]]:
    """Every component's grants for keys under `prefix`."""
    keys = Keys(glob_escape(prefix))
    read_queue = ("xread", "xrange", "xrevrange")
    # An operator's tool may follow a queue as a consumer group (`nabij tail --group`).
    group_queue = ("xgroup|create", "xreadgroup", "xack")

    def operator(*queues: QueueName) -> list[Grant]:
        return [
            Grant(("hgetall", "hget", "hexists"), (keys.alarms,), "R"),
            Grant(("get",), (keys.request_outcome(ANY),), "R"),
            Grant(("xadd",), (keys.human_requests,), "W"),
            Grant(read_queue + group_queue, tuple(keys.dispatch(q) for q in queues)),
        ]

    # Services bootstrap an empty store from orders.toml; `nabij orders` connects as the console.
    orders = Grant(
        ("get", "set", "watch", "hget", "hgetall", "hset"),
        (keys.orders_version, keys.order_versions),
    )

    def evidence(writer: str) -> Grant:
        """Appending to one writer's chain (docs/evidence.md)."""
        chain = (
            keys.audit_log(writer),
            keys.audit_head(writer),
            keys.audit_checkpoint(writer),
            keys.audit_anchors(writer),
        )
        return Grant(("get", "set", "hset", "watch"), chain)

    register_writer = Grant(("sadd",), (keys.audit_writers,), "W")
    orders_evidence = evidence("orders")
    police = [
        *operator("probation", "police"),
        Grant(("hget", "hgetall"), (keys.police_facts,), "R"),
    ]
    shards = keys.every_proximity_shard()
    unsharded = keys.unsharded  # read once after an upgrade from a version before shards
    # Where a device's state is: the layouts' marks say which shard holds it (see layout.py).
    layout = Grant(("get",), (shards.layout_since,), "R")
    return {
        "proximity": [
            Grant(
                ("get", "set", "mset", "mget", "sadd", "smembers"),
                (
                    shards.device_state(ANY),
                    shards.pair_state(ANY, ANY, ANY),
                    shards.proximity_devices,
                    shards.layout_since,
                    shards.platform_state,
                ),
            ),
            Grant(("xadd",), (shards.gateway_inbox, keys.deadletter), "W"),
            Grant(("sadd",), (keys.signal_inboxes,), "W"),
            Grant(("xadd", "xtrim", "xrange"), (shards.command_outbox,)),
            Grant(("get", "set", "exists"), (shards.commit_counter, keys.health("proximity*"))),
            Grant(
                ("get", "exists", "xrange"),
                (
                    unsharded.device_state(ANY),
                    unsharded.pair_state(ANY, ANY, ANY),
                    unsharded.platform_state,
                    unsharded.command_outbox,
                    unsharded.proximity_devices,
                ),
                "R",
            ),
            Grant((*LEASE_COMMANDS, "exists"), (shards.lease,)),
            Grant(("hset", "hgetall"), (shards.handover,)),
            # A hand-over waits for the gateway to apply the source's signals (handover.py).
            Grant(("xrevrange",), (shards.gateway_inbox,), "R"),
            Grant(("hmget",), (keys.applied_signals,), "R"),
            orders,
            evidence("proximity"),
            orders_evidence,
            register_writer,
        ],
        "gateway": [
            Grant(
                ("xgroup|create", "xreadgroup", "xack", "xdel", "xlen", "xinfo|groups", "exists"),
                (shards.gateway_inbox, keys.human_requests, unsharded.gateway_inbox),
            ),
            Grant(("smembers",), (keys.signal_inboxes,), "R"),
            Grant(("hgetall", "hset"), (keys.applied_signals,)),
            Grant(LEASE_COMMANDS, (keys.gateway_lease,)),
            Grant(("hgetall", "hget", "hset", "hdel"), (keys.alarms, keys.police_facts)),
            Grant(
                ("xadd", "xrange", "xrevrange", "xtrim", "xlen"),
                (keys.resolved_alarms, keys.dispatch("probation"), keys.dispatch("police")),
            ),
            Grant(("xinfo|groups",), (keys.dispatch("probation"), keys.dispatch("police"))),
            Grant(("set",), (keys.request_outcome(ANY),), "W"),
            Grant(("xadd",), (keys.deadletter,), "W"),
            Grant(("get", "set"), (keys.commit_counter("gateway:*"), keys.health("gateway"))),
            evidence("gateway:*"),
            register_writer,
        ],
        "probation": operator("probation"),
        "police": police,
        # The console serves both roles and filters by its logged-in operator's role
        # (services/console). It also keeps the operators (`nabij operator` connects as it) and
        # the sessions, reads the gateway's heartbeat and the devices' last contact.
        "console": [
            *police,
            Grant(("hget", "hset", "hdel"), (keys.operators,)),
            Grant(("get", "set", "del"), (keys.console_session(ANY),)),
            Grant(("exists",), (keys.health("gateway"),), "R"),
            Grant(("get",), (shards.device_state(ANY),), "R"),
            layout,
            orders,
            # `nabij orders` and `nabij audit` (export reads every chain, prune drops bodies).
            orders_evidence,
            evidence("exports"),
            Grant(
                ("smembers", "hgetall", "hmget", "hscan", "hset", "get", "sadd"),
                (
                    keys.audit_writers,
                    keys.audit_log(ANY),
                    keys.audit_checkpoint(ANY),
                    keys.audit_anchors(ANY),
                ),
            ),
        ],
    }


def acl_file(prefix: str, users: Mapping[RedisRole, tuple[str, str | None]]) -> str:
    """The ACL file: for each role (username, SHA-256 hex of its password or None)."""
    # Redis ACL files take no comments: docs/security.md explains the file.
    lines = ["user default off resetchannels -@all"]
    for role, role_grants in grants(prefix).items():
        username, password_sha256 = users[role]
        state = f"on #{password_sha256}" if password_sha256 else "off"
        rules = " ".join(grant.render() for grant in role_grants)
        keyless = " ".join("+" + command for command in KEYLESS_COMMANDS)
        lines.append(f"user {username} reset {state} resetchannels -@all {keyless} {rules}")
    return "\n".join(lines) + "\n"


def default_username(role: RedisRole) -> str:
    return f"nabij-{role}"


__all__ = ["REDIS_ROLES", "Grant", "acl_file", "default_username", "glob_escape", "grants"]
