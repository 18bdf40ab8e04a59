"""Every Redis key and stream name nabij uses, in one place.

Gateway keys share the configured prefix; set `key_prefix = "{nabij}"` on Redis Cluster so they
hash to one slot and the gateway's transactions stay single-slot. Per-device proximity state keys
carry the device id as their own hash tag so that state spreads across a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from nabij.contract import QueueName


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

    @property
    def gateway_inbox(self) -> str:
        """Stream of alarm signals from the proximity service to the gateway."""
        return f"{self.prefix}:gateway:inbox"

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

    def device_state(self, device_id: str) -> str:
        """Proximity state of one device (latest accepted fix, seq, flags), msgpack."""
        return f"{self.prefix}:prox:{{{device_id}}}:device"

    def pair_state(self, offender_device: str, order_id: str, victim_device: str) -> str:
        """Hysteresis state of one pair, tagged with the offender so it shares his slot."""
        return f"{self.prefix}:prox:{{{offender_device}}}:pair:{order_id}:{victim_device}"

    @property
    def platform_state(self) -> str:
        """Whether nabij is blind and since which outage (msgpack `PlatformState`): one
        `platform_degraded` and one `platform_restored` per outage, across restarts."""
        return f"{self.prefix}:prox:platform"

    @property
    def command_outbox(self) -> str:
        """Stream of device commands committed with the state that caused them, until sent."""
        return f"{self.prefix}:prox:outbox"

    @property
    def proximity_devices(self) -> str:
        """Set of device ids with stored proximity state (for start-up hydration)."""
        return f"{self.prefix}:prox:devices"

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
