"""Every Redis key and stream name nabij uses, in one place.

Redis Cluster takes a transaction only when all its keys hash to one slot. Gateway keys share the
configured prefix: set `key_prefix = "{nabij}"` on Redis Cluster so they hash to one slot and the
gateway's commit stays single-slot. Everything one proximity shard commits (device and pair state,
its signal inbox to the gateway, its command outbox, its commit counter and lease) carries the
shard's own hash tag (`ShardKeys`), so each shard's commit is single-slot too and the shards'
state spreads over the cluster's nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from nabij.contract import QueueName


@dataclass(frozen=True, slots=True)
class Shard:
    """Proximity shard `index` of `count` (1-based; `K/N` on the command line)."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 1 <= K <= N")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`K/N`, e.g. `2/4`; raises ValueError for anything else."""
        index, sep, count = text.partition("/")
        if not (sep and index.isdigit() and count.isdigit()):
            raise ValueError(f"shard {text!r}: expected K/N, e.g. 1/2")
        return cls(int(index), int(count))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """The keys one proximity shard commits, all under its hash tag: one Redis Cluster slot."""

    tag: str

    def device_state(self, device_id: str) -> str:
        """Proximity state of one device (latest accepted fix, seq, flags), msgpack."""
        return f"{self.tag}:device:{device_id}"

    def pair_state(self, offender_device: str, order_id: str, victim_device: str) -> str:
        """Hysteresis state of one pair."""
        return f"{self.tag}:pair:{order_id}:{offender_device}:{victim_device}"

    @property
    def proximity_devices(self) -> str:
        """Set of device ids with stored state in this shard (for start-up hydration)."""
        return f"{self.tag}:devices"

    @property
    def gateway_inbox(self) -> str:
        """Stream of this shard's alarm signals to the gateway."""
        return f"{self.tag}:inbox"

    @property
    def command_outbox(self) -> str:
        """Stream of device commands committed with the state that caused them, until sent."""
        return f"{self.tag}:outbox"

    @property
    def commit_counter(self) -> str:
        """The shard's commit counter (see `services.shell.commit`)."""
        return f"{self.tag}:commits"

    @property
    def lease(self) -> str:
        """Who may commit for this shard now (a token with a TTL, see `services.shell.lease`)."""
        return f"{self.tag}:lease"

    @property
    def platform_state(self) -> str:
        """Whether this shard's devices went blind together and since which outage (msgpack
        `PlatformState`): one `platform_degraded` and one `platform_restored` per outage, across
        restarts (each shard watches its own devices)."""
        return f"{self.tag}:platform"

    @property
    def layout_since(self) -> str:
        """When this shard's layout (its N) took over the state (ms), set once by its first
        start: a newer layout's shards adopt state from the newest older one."""
        return f"{self.tag}:since"

    @property
    def handover(self) -> str:
        """Hash of where this shard is in the steps from one orders version to the next
        (`subscribed`, `released`, `adopted`: each the version it did that for): the other
        shards read it to hand devices over to it, or take them over from it
        (services/proximity/handover.py)."""
        return f"{self.tag}:handover"


@dataclass(frozen=True, slots=True)
class UnshardedKeys:
    """The proximity keys of the single process of versions before shards, each device's under
    its own hash tag: read once, by the first shards, to adopt that state (`layout.py`)."""

    prefix: str

    def device_state(self, device_id: str) -> str:
        return f"{self.prefix}:prox:{{{device_id}}}:device"

    def pair_state(self, offender_device: str, order_id: str, victim_device: str) -> str:
        return f"{self.prefix}:prox:{{{offender_device}}}:pair:{order_id}:{victim_device}"

    @property
    def platform_state(self) -> str:
        return f"{self.prefix}:prox:platform"

    @property
    def command_outbox(self) -> str:
        return f"{self.prefix}:prox:outbox"

    @property
    def proximity_devices(self) -> str:
        return f"{self.prefix}:prox:devices"

    @property
    def gateway_inbox(self) -> str:
        """Its signal inbox: the gateway reads it until it is empty."""
        return f"{self.prefix}:gateway:inbox"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "nabij"

    def dispatch(self, queue: QueueName) -> str:
        """A dispatch queue (Redis Stream, one field `notice`)."""
        return f"{self.prefix}:dispatch:{queue}"

    @property
    def deadletter(self) -> str:
        """Capped stream of rejected input, raw, with the reason."""
        return f"{self.prefix}:deadletter"

    def proximity(self, shard: Shard) -> ShardKeys:
        """The keys of one proximity shard: hash tag `{<prefix>:prox:<K>of<N>}` (braces of a
        Cluster prefix dropped: the shard's own tag must be the key's first)."""
        return self._shard_keys(f"{shard.index}of{shard.count}")

    @property
    def unsharded(self) -> UnshardedKeys:
        return UnshardedKeys(self.prefix)

    def every_proximity_shard(self, pattern: str = "*") -> ShardKeys:
        """Keys whose tag is a glob over every shard (for ACL patterns)."""
        return self._shard_keys(pattern)

    def _shard_keys(self, name: str) -> ShardKeys:
        bare = self.prefix.replace("{", "").replace("}", "")
        return ShardKeys(f"{{{bare}:prox:{name}}}")

    @property
    def signal_inboxes(self) -> str:
        """Set of the shards' signal inbox streams, which the gateway reads (each shard adds its
        own at start; an inbox of an earlier layout stays until the gateway has drained it)."""
        return f"{self.prefix}:gateway:inboxes"

    @property
    def applied_signals(self) -> str:
        """Hash inbox stream -> id of the newest entry the gateway applied from it, written in
        the gateway's commit (its slot); the XACK on the shard's slot follows outside it."""
        return f"{self.prefix}:gateway:applied"

    @property
    def gateway_lease(self) -> str:
        """Which gateway may commit now (token with a TTL): a second one waits as standby."""
        return f"{self.prefix}:gateway:lease"

    @property
    def human_requests(self) -> str:
        """Stream of human requests (ack, resolve) for the gateway, apart from the signals so
        that only the CLI's and the console's Redis users may append to it."""
        return f"{self.prefix}:gateway:requests"

    def request_outcome(self, request_id: str) -> str:
        """What the gateway did with one human request (JSON `RequestOutcome`), kept an hour."""
        return f"{self.prefix}:gateway:outcome:{request_id}"

    @property
    def gateway_group(self) -> str:
        return "gateway"

    @property
    def alarms(self) -> str:
        """Hash alarm_id -> alarm record (JSON), every alarm not yet resolved.

        A record carries its own escalation due time, so timers survive any restart with it.
        """
        return f"{self.prefix}:gateway:alarms"

    @property
    def police_facts(self) -> str:
        """POLICE ONLY. Hash alarm_id -> the alarm's exact facts (JSON): both positions, exact
        distance, uncertainty, confidence, closing speed, time to contact, full reason.

        Only the gateway (which writes it in the same transaction as the record) and police-role
        users may read it; alarm records and resolved records hold none of it. Entries of
        resolved alarms are deleted after `privacy.police_facts_retention_s`.
        """
        return f"{self.prefix}:gateway:police"

    @property
    def resolved_alarms(self) -> str:
        """Stream of resolved alarm records, kept for history and export."""
        return f"{self.prefix}:gateway:resolved"

    @property
    def orders_version(self) -> str:
        """The number of the current orders version (0 or absent: the store is empty)."""
        return f"{self.prefix}:orders:version"

    @property
    def order_versions(self) -> str:
        """Hash version number -> that version (JSON `OrdersVersion`: every order, who, when,
        why). Never rewritten: the history of orders is evidence."""
        return f"{self.prefix}:orders:versions"

    def commit_counter(self, service: str) -> str:
        """Counter bumped in every commit of a service: tells a lost reply from a lost write."""
        return f"{self.prefix}:commits:{service}"

    @property
    def operators(self) -> str:
        """Hash operator name -> {role, argon2 hash} (JSON): who may log in to the console."""
        return f"{self.prefix}:console:operators"

    def console_session(self, token_hash: str) -> str:
        """One console session (JSON), by the SHA-256 of its cookie: a leaked key name or dump
        gives no usable cookie."""
        return f"{self.prefix}:console:session:{token_hash}"

    # --- evidence trail: one chain per writer, its keys tagged with the writer's name ----------

    def audit_log(self, writer: str) -> str:
        """Hash seq -> record (envelope, newline, body; the envelope alone once pruned)."""
        return f"{self.prefix}:audit:{{{writer}}}:log"

    def audit_head(self, writer: str) -> str:
        """ "SIZE HEADHEX": where the writer's chain stands, written with every append."""
        return f"{self.prefix}:audit:{{{writer}}}:head"

    def audit_checkpoint(self, writer: str) -> str:
        """The writer's latest signed checkpoint (JSON), rewritten with every append."""
        return f"{self.prefix}:audit:{{{writer}}}:checkpoint"

    def audit_anchors(self, writer: str) -> str:
        """Hash size -> signed checkpoint kept for good (about one per `anchor_interval_s`):
        where an export's segment may start and end."""
        return f"{self.prefix}:audit:{{{writer}}}:anchors"

    @property
    def audit_writers(self) -> str:
        """Set of the writers that have a chain (registered at start, outside any commit)."""
        return f"{self.prefix}:audit:writers"

    def health(self, service: str) -> str:
        """Heartbeat key a service refreshes; its TTL tells whether the service is alive."""
        return f"{self.prefix}:health:{service}"
