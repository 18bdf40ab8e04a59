"""Service settings (`nabij.toml`): typed, validated, unknown keys rejected.

Loaded by `nabij.config`; everything here is a plain value once loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field

from nabij.contract import AlarmKind, QueueName

PositiveSeconds = Annotated[float, Field(gt=0)]


class StrictModel(BaseModel):
    """Frozen, and every unknown key is an error (a typo must never fall back to a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(StrictModel):
    url: str = "mqtt://127.0.0.1:1883"
    topic_prefix: str = Field(default="nabij/v1", pattern=r"^[^#+]+$")
    client_id: str = "nabij-proximity"
    keepalive_s: int = Field(default=30, ge=5)


class RedisSettings(StrictModel):
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field(default="nabij", min_length=1)
    deadletter_maxlen: int = Field(default=100_000, ge=100)


class ProximitySettings(StrictModel):
    enter_dwell_s: float = Field(default=10, ge=0)
    exit_dwell_s: float = Field(default=60, ge=0)
    critical_m: float = Field(default=100, ge=0)
    max_fix_age_s: PositiveSeconds = 120
    location_unknown_s: PositiveSeconds = 180
    # None: max(50 m, 10% of the ring), per ring.
    exit_margin_m: float | None = Field(default=None, ge=0)
    # Fix interval asked of both devices while a pair is inside (or entering) a ring.
    alarm_interval_s: int = Field(default=15, ge=1, le=3600)
    normal_interval_s: int = Field(default=60, ge=1, le=3600)
    battery_low_pct: int = Field(default=15, ge=0, le=100)
    # A fix whose clock is this far ahead of the server is rejected as bad input.
    max_clock_ahead_s: PositiveSeconds = 300
    batch_max: int = Field(default=2000, ge=1)
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


class GatewaySettings(StrictModel):
    # An `updated` notice for the same alarm at most this often (aware presses are never held).
    update_min_interval_s: float = Field(default=30, ge=0)
    batch_max: int = Field(default=500, ge=1)


class LogSettings(StrictModel):
    level: str = Field(default="info", pattern=r"^(debug|info|warning|error)$")


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
}


class Settings(StrictModel):
    mqtt: MqttSettings = MqttSettings()
    redis: RedisSettings = RedisSettings()
    proximity: ProximitySettings = ProximitySettings()
    gateway: GatewaySettings = GatewaySettings()
    log: LogSettings = LogSettings()
    escalation: dict[AlarmKind, EscalationPolicy] = {}

    def policy(self, kind: AlarmKind) -> EscalationPolicy:
        return self.escalation.get(kind) or DEFAULT_ESCALATION[kind]


# --- area bans and exemptions -----------------------------------------------------------------
