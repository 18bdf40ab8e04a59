"""Service settings (`nabij.toml`): typed, validated, unknown keys rejected.

Loaded by `nabij.config`; everything here is a plain value once loaded.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nabij.clock import Timescale
from nabij.contract import AlarmKind, QueueName
from nabij.evidence.chain import RecordClass
from nabij.keys import Shard

PositiveSeconds = Annotated[float, Field(gt=0)]


class StrictModel(BaseModel):
    """Frozen, and every unknown key is an error (a typo must never fall back to a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(StrictModel):
    url: str = "mqtt://127.0.0.1:1883"
    topic_prefix: str = Field(default="nabij/v1", pattern=r"^[^#+]+$")
    client_id: str = "nabij-proximity"
    keepalive_s: int = Field(default=30, ge=5)
    # The broker identity (`nabij device add --service NAME` provisions `nabij.NAME`); None: the
    # URL's, if any. The password is never in this file: `NABIJ_MQTT_PASSWORD`, else the first
    # line of `password_file` (mode 0600, as `nabij device add` writes it).
    username: str | None = None
    password_file: Path | None = None
    # TLS (with an mqtts:// URL): the CA that signed the broker's certificate, and this client's
    # certificate and key for a listener that takes the certificate's CN as the username.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


# What one dead letter may take beside its payload: `services.shell.redis_io` cuts `detail` and
# `topic` to these bounds; the other fields (source, reason, size, sha256, received_ms), the field
# names and Redis's own cost of an entry (listpack, radix-tree node) come on top. Measured with
# MEMORY USAGE (tests/test_redis_io.py), a letter with an empty payload and detail and topic at
# their bounds takes 1,800 bytes: 2,560 holds it with margin. The allocator (jemalloc) rounds every
# allocation up to its size class, at most 25% more, hence the factor in `deadletter_entry_bytes`.
DEADLETTER_DETAIL_MAX_BYTES: Final = 1024
DEADLETTER_TOPIC_MAX_BYTES: Final = 256
DEADLETTER_ENTRY_OVERHEAD_BYTES: Final = 2560
MIN_DEADLETTER_ENTRIES: Final = 100


# Each component connects to Redis as its own ACL user (`nabij redis-acl` writes their rules):
# the services, the operators' tools by role (probation, police) and the console (issue 9).
RedisRole = Literal["proximity", "gateway", "probation", "police", "console"]
REDIS_ROLES: Final[tuple[RedisRole, ...]] = RedisRole.__args__  # type: ignore[attr-defined]  # Literal exposes its values here


class RedisUser(StrictModel):
    """One component's Redis ACL user. Its password comes from a file or an environment
    variable, never from the config itself (nor a command line)."""

    username: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    password_file: Path | None = None
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _one_password_source(self) -> RedisUser:
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError("set exactly one of password_file and password_env")
        return self


class RedisSettings(StrictModel):
    # Without credentials for a component (`users`), it connects with this URL as it is: fine for
    # development, where the URL may also carry `user:password@`.
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field(default="nabij", min_length=1)
    users: dict[RedisRole, RedisUser] = {}
    # The dead-letter stream (rejected input, kept for inspection) holds at most this many
    # entries ...
    deadletter_maxlen: int = Field(default=100_000, ge=MIN_DEADLETTER_ENTRIES)
    # ... each with at most this many bytes of the raw payload (its size and sha256 are kept) ...
    deadletter_payload_bytes: int = Field(default=4096, ge=0, le=1_048_576)
    # ... and all of them in at most this many bytes of Redis memory (see `deadletter_entries`).
    deadletter_budget_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    # A Redis Cluster (then `url` names any one node and `key_prefix` needs a hash tag, e.g.
    # "{nabij}"; docs/architecture.md).
    cluster: bool = False
    # One gateway and one process per proximity shard commit at a time, each under a lease of
    # this many wall seconds renewed while it runs: a standby takes over this long after a crash.
    lease_ttl_s: float = Field(default=5, gt=0, le=300)

    @property
    def deadletter_entry_bytes(self) -> int:
        """The most one dead letter can take in Redis: (payload + overhead) x 5/4 (allocator)."""
        return (self.deadletter_payload_bytes + DEADLETTER_ENTRY_OVERHEAD_BYTES) * 5 // 4

    @property
    def deadletter_entries(self) -> int:
        """The stream's effective MAXLEN: the count cap, lowered to what the byte budget holds.

        Defaults: 64 MiB / ((4,096 + 2,560) x 5/4 = 8,320 B) = 8,065 entries (below the count cap
        of 100,000); measured, such an entry takes 6,650 B.
        Trimming is approximate (`MAXLEN ~`, whole radix-tree nodes), so the stream may exceed
        this by less than one node: at most `stream-node-max-bytes` (4 KiB by default) plus one
        entry, which is negligible beside the budget.
        """
        return min(
            self.deadletter_maxlen, self.deadletter_budget_bytes // self.deadletter_entry_bytes
        )

    @model_validator(mode="after")
    def _budget_holds_enough_letters(self) -> RedisSettings:
        if self.deadletter_budget_bytes // self.deadletter_entry_bytes < MIN_DEADLETTER_ENTRIES:
            raise ValueError(
                f"deadletter_budget_bytes must hold at least {MIN_DEADLETTER_ENTRIES} dead letters"
                f" of {self.deadletter_entry_bytes} bytes ((deadletter_payload_bytes + "
                f"{DEADLETTER_ENTRY_OVERHEAD_BYTES}) x 5/4)"
            )
        return self


class ProximitySettings(StrictModel):
    enter_dwell_s: float = Field(default=10, ge=0)
    exit_dwell_s: float = Field(default=60, ge=0)
    critical_m: float = Field(default=100, ge=0)
    # Times below are nabij's (server) time: a device clock never decides freshness or dwell.
    # A partner position older than this (at the time of the fix it is compared with) is not used.
    max_fix_age_s: PositiveSeconds = 120
    location_unknown_s: PositiveSeconds = 180
    # None: max(50 m, 10% of the ring), per ring.
    exit_margin_m: float | None = Field(default=None, ge=0)
    # Fix interval asked of both devices while a pair is inside (or entering) a ring.
    alarm_interval_s: int = Field(default=15, ge=1, le=3600)
    normal_interval_s: int = Field(default=60, ge=1, le=3600)
    battery_low_pct: int = Field(default=15, ge=0, le=100)
    # A fix measured longer than this before it arrived is late (a backlog): it is judged at the
    # time it was measured against where the partner was then, and its alarms say how late.
    late_after_s: PositiveSeconds = 30
    # How far back each device's positions are kept to judge a partner's backlog: a coverage gap
    # up to this long is judged in full.
    history_s: PositiveSeconds = 900
    # A device clock this far off nabij's (on live fixes) for `fault_dwell_s` is a device_fault;
    # so are refused messages (>= 3, none accepted) for as long.
    clock_fault_s: PositiveSeconds = 60
    fault_dwell_s: PositiveSeconds = 120
    batch_max: int = Field(default=2000, ge=1)
    # Which part of the orders this process judges: shard K of N (`nabij proximity --shard K/N`).
    shard: str = Field(default="1/1", pattern=r"^[1-9][0-9]*/[1-9][0-9]*$")
    # Ingest bounds (see services/proximity/core/lanes.py). Per device: a real device sends a few
    # messages a second and, while nabij keeps up, has fewer than 5 waiting; beyond this many its
    # surplus is refused as `flood` (only surplus that is not JSON while catching up on the
    # broker's backlog after a restart).
    device_queue_max: int = Field(default=256, ge=1)
    # ... and once that burst is spent, this many messages a second (token bucket). Live only.
    device_rate_max: float = Field(default=20, gt=0)
    # Per lane (fast, bulk): beyond these the MQTT reader stops reading and the broker holds the
    # rest (backpressure). 20,000 is ten default batches.
    lane_max: int = Field(default=20_000, ge=1)
    lane_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    # A flood still going on is dead-lettered once per this many seconds (one letter per burst).
    refusal_report_s: PositiveSeconds = 10
    # After each commit, tell every device heard in the batch how far its messages are committed
    # (`Committed` on its cmd topic, QoS 0), so it can keep them until then (docs/reliability.md).
    commit_acks: bool = True
    # A fix implying more than this speed from the device's track is an outlier (GPS jump) ...
    max_speed_mps: float = Field(default=70, gt=0)
    # ... until this many consecutive outliers agree with each other: then the device moved.
    jump_confirm_fixes: int = Field(default=3, ge=2, le=10)
    # A pre-alert opens early when the predicted closest approach within this horizon falls
    # inside the alarm ring (0: no prediction).
    predict_horizon_s: float = Field(default=60, ge=0, le=600)
    # Exclusion zones: leaving needs the offender this far outside for the exit dwell; this deep
    # inside opens at once.
    zone_exit_margin_m: float = Field(default=50, ge=0)
    zone_deep_m: float = Field(default=50, ge=0)
    # Presence (server time, checked every tick; docs/proximity.md section 9). device_offline
    # opens when a device has been offline (status online:false, last will, power_off) this long:
    # the broker publishes a will only after the link is already gone, and a reconnect after a
    # cell handover or a broker restart takes seconds, so a minute hides those and still tells
    # the operator well before an offender's location_unknown (180 s).
    offline_dwell_s: float = Field(default=60, ge=0)
    # It clears only after the device has been online (status online or an accepted fix)
    # continuously this long: two fixes at the normal 60 s interval, so a device that drops again
    # at once never produces a clear and a reopen.
    online_dwell_s: float = Field(default=120, ge=0)
    # More than this many drops within flap_window_s open device_offline at once ("connection
    # unstable"), without the dwell: a link that drops every half minute is never offline for a
    # whole dwell, and is exactly what a shielded or failing device looks like.
    flap_drops: int = Field(default=3, ge=1, le=100)
    flap_window_s: PositiveSeconds = 600
    # A victim device with no accepted fix (server time) for this long leaves its victim
    # unprotected: five missed fixes at the normal 60 s interval. Longer than the offender's
    # location_unknown_s because a victim indoors loses GNSS far more often than she is at risk,
    # and the victim device already speeds up to 15 s while an offender is near.
    victim_silence_s: PositiveSeconds = 300

    @model_validator(mode="after")
    def _shard_in_range(self) -> ProximitySettings:
        Shard.parse(self.shard)  # K in 1..N, or a ValueError saying so
        return self

    @property
    def shard_part(self) -> Shard:
        return Shard.parse(self.shard)


class PlatformSettings(StrictModel):
    """When nabij tells the dispatchers it is blind (`platform_degraded`, docs/operations.md).

    Checked every tick on nabij's clock while orders are in force. Keep `quiet_after_s` +
    `group_window_s` below `location_unknown_s` and `victim_silence_s`: a device that joins the
    grouped notice then never raises its own silence alarm first."""

    # (a) The broker unreachable, or no message from any device, this long: degraded.
    blind_after_s: PositiveSeconds = 60
    # A device not heard this long (or reported offline) is quiet ...
    quiet_after_s: PositiveSeconds = 90
    # ... and (b) devices that went quiet within this window of each other are one event:
    group_window_s: PositiveSeconds = 60
    # degraded, with one grouped notice, when at least this many went quiet in the window ...
    group_min_devices: int = Field(default=10, ge=2)
    # ... and at least this share of the devices in force did (0: the count alone decides).
    group_min_share: float = Field(default=0.0, ge=0, le=1)


class GatewaySettings(StrictModel):
    # An `updated` notice for the same alarm at most this often (aware presses are never held).
    update_min_interval_s: float = Field(default=30, ge=0)
    batch_max: int = Field(default=500, ge=1)


class HealthSettings(StrictModel):
    # /metrics, /healthz and /readyz answer on this address only: loopback unless a probe or a
    # Prometheus on another host needs them (then name that interface, never 0.0.0.0 blindly).
    bind: str = "127.0.0.1"


class PrivacySettings(StrictModel):
    """What the probation role is told instead of exact figures, and how long victim data lives.

    See docs/privacy.md for the promise these numbers keep."""

    # Edges of the distance bands in probation notices: a distance d is told as the band between
    # the two edges around it ([0, first) below the first edge, [last, none) beyond the last).
    # The defaults put an edge on the default rings (alarm 500 m, pre-alert 2 x 500 m).
    probation_distance_bands_m: list[float] = Field(
        default=[100.0, 250.0, 500.0, 1000.0, 2000.0], min_length=1
    )
    # Police facts (positions, exact distance, closing speed, time to contact) of a resolved
    # alarm are deleted this long after it was resolved; an open alarm keeps them while open.
    police_facts_retention_s: PositiveSeconds = 7 * 86_400
    # Entries of the police dispatch queue (they carry the victim's position) older than this
    # are trimmed.
    police_queue_retention_s: PositiveSeconds = 7 * 86_400
    # Resolved alarm records (no positions: history for probation and export).
    resolved_retention_s: PositiveSeconds = 365 * 86_400
    # Side of the grid cells the victim's position is snapped to before anything sent to the
    # offender's device is decided: his warnings and fix interval cannot place her closer than
    # this. His rings grow by half the cell's diagonal (so he is warned earlier, never later).
    offender_grid_m: float = Field(default=250.0, gt=0, le=5000)

    @model_validator(mode="after")
    def _bands_increase(self) -> PrivacySettings:
        edges = self.probation_distance_bands_m
        if edges[0] <= 0 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError("probation_distance_bands_m must be positive and strictly increasing")
        return self


class ConsoleSettings(StrictModel):
    """The dispatcher console (`nabij console`, docs/console.md)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65_535)
    # A session ends this long after login, on nabij's clock; the operator logs in again.
    session_ttl_s: PositiveSeconds = 8 * 3600
    # Failed logins per operator name and per client address within the window before refusing.
    login_attempts: int = Field(default=5, ge=1)
    login_window_s: PositiveSeconds = 300
    # Secure cookies travel over HTTPS only (and http://127.0.0.1, which browsers trust); off
    # only behind a TLS-terminating proxy that speaks plain HTTP to the console on another host.
    secure_cookies: bool = True
    # How long an acknowledge or resolve waits for the gateway's outcome before saying "queued".
    outcome_wait_s: PositiveSeconds = 5


class LogSettings(StrictModel):
    level: str = Field(default="info", pattern=r"^(debug|info|warning|error)$")


class ClockSettings(StrictModel):
    """Simulations only: nabij on a scenario's clock (`nabij simulate --write-config` writes it).

    nabij's clock becomes `anchor_ms + speed * (wall_ms - anchor_ms)`, the mapping the simulated
    devices stamp with, and every timer runs on it. Never set this in production."""

    speed: float = Field(default=1.0, gt=0, le=10_000)
    # Epoch ms at which nabij's clock equals the wall clock; required when speed is not 1.
    anchor_ms: int | None = Field(default=None, ge=946_684_800_000, le=4_102_444_800_000)

    @model_validator(mode="after")
    def _anchored(self) -> ClockSettings:
        if self.speed != 1.0 and self.anchor_ms is None:
            raise ValueError("a clock speed other than 1 needs anchor_ms")
        return self

    def timescale(self) -> Timescale:
        return Timescale(self.speed, self.anchor_ms or 0)


class EscalationPolicy(StrictModel):
    priority: int = Field(ge=1, le=3)
    queues: list[QueueName] = Field(min_length=1)
    ack_timeout_s: PositiveSeconds = 60
    escalate_to: list[QueueName] = []


DEFAULT_ESCALATION: Final[Mapping[AlarmKind, EscalationPolicy]] = {
    "aware_button": EscalationPolicy(priority=1, queues=["police", "probation"], ack_timeout_s=60),
    "proximity_alarm": EscalationPolicy(
        priority=1, queues=["probation"], ack_timeout_s=60, escalate_to=["police"]
    ),
    "zone_alarm": EscalationPolicy(
        priority=1, queues=["probation"], ack_timeout_s=60, escalate_to=["police"]
    ),
    "strap_tamper": EscalationPolicy(
        priority=1, queues=["probation"], ack_timeout_s=60, escalate_to=["police"]
    ),
    "proximity_pre_alert": EscalationPolicy(priority=2, queues=["probation"], ack_timeout_s=300),
    "location_unknown": EscalationPolicy(priority=2, queues=["probation"], ack_timeout_s=300),
    "device_offline": EscalationPolicy(priority=2, queues=["probation"], ack_timeout_s=300),
    "battery_low": EscalationPolicy(priority=3, queues=["probation"], ack_timeout_s=3600),
    "device_fault": EscalationPolicy(priority=2, queues=["probation"], ack_timeout_s=300),
    "victim_unprotected": EscalationPolicy(priority=2, queues=["probation"], ack_timeout_s=300),
    # nabij cannot see (docs/operations.md#platform-degraded): everyone at once, reminded.
    "platform_degraded": EscalationPolicy(
        priority=1, queues=["probation", "police"], ack_timeout_s=60
    ),
    "platform_restored": EscalationPolicy(
        priority=3, queues=["probation", "police"], ack_timeout_s=3600
    ),
}


class AuditSettings(StrictModel):
    """The evidence trail (docs/evidence.md)."""

    # Ed25519 private key (PKCS#8 PEM) that signs checkpoints and bundles; made on first start
    # when the file does not exist (mode 0600, public key beside it as KEY.pub). Unset: no trail
    # is written (a warning at start); production sets it.
    key_file: Path | None = None
    # How often (nabij's clock) a writer keeps a checkpoint an export may start from.
    anchor_interval_s: PositiveSeconds = 60
    # Per record class: seconds after which `nabij audit prune` drops a record's body (its hash
    # stays in the chain). 0 keeps it forever. Classes: uplink, decision, command, notice,
    # request, order, export.
    retention_s: dict[RecordClass, Annotated[int, Field(ge=0)]] = {
        "uplink": 730 * 86_400,
        "decision": 0,
        "command": 730 * 86_400,
        "notice": 0,
        "request": 0,
        "order": 0,
        "export": 0,
    }


class Settings(StrictModel):
    mqtt: MqttSettings = MqttSettings()
    redis: RedisSettings = RedisSettings()
    proximity: ProximitySettings = ProximitySettings()
    platform: PlatformSettings = PlatformSettings()
    gateway: GatewaySettings = GatewaySettings()
    log: LogSettings = LogSettings()
    health: HealthSettings = HealthSettings()
    privacy: PrivacySettings = PrivacySettings()
    console: ConsoleSettings = ConsoleSettings()
    clock: ClockSettings = ClockSettings()
    audit: AuditSettings = AuditSettings()
    escalation: dict[AlarmKind, EscalationPolicy] = {}

    def policy(self, kind: AlarmKind) -> EscalationPolicy:
        return self.escalation.get(kind) or DEFAULT_ESCALATION[kind]

    @model_validator(mode="after")
    def _audit_needs_a_single_redis(self) -> Settings:
        # A proximity shard's evidence chain is keyed by its writer's hash tag, not its shard's:
        # on Redis Cluster every commit of a shard would span two slots and be refused
        # (CROSSSLOT). Refused here, at start, rather than as a service that never commits.
        if self.redis.cluster and self.audit.key_file is not None:
            raise ValueError(
                "audit.key_file (the evidence trail) needs a single Redis: set redis.cluster ="
                " false, or leave audit.key_file unset on Redis Cluster (docs/architecture.md)"
            )
        return self


# --- area bans and exemptions -----------------------------------------------------------------
