"""Functional core of the alarm gateway: pure, deterministic, no clock, no I/O."""

from services.alarm_gateway.core.alarms import AlarmBook, AlarmRecord, Decision, alarm_id_for

__all__ = ["AlarmBook", "AlarmRecord", "Decision", "alarm_id_for"]
