"""Topic + payload -> typed uplinks, or rejections with a machine reason.

Nothing here echoes coordinates: details carry msgspec's messages, which name the field path
(`$.lat`) and the constraint, never the value of a number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from nabij.contract import (
    MAX_BACKLOG_FIXES,
    DeviceEvent,
    DeviceStatus,
    Fix,
    Seq,
    Topics,
    event_decoder,
    fix_decoder,
    fix_payload_decoder,
    fix_position_decoder,
    status_decoder,
)

# A panic press or a cut strap (`SAFETY_EVENTS`, in the contract because firmware must know they
# move no counter) must reach an operator: salvaged from a broken payload, and never dropped for
# its clock or its counter (see the engine).


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    """Short machine label: invalid_json, schema, device_mismatch, unknown_device, unknown_topic,
    empty_batch, batch_too_large, salvaged (kept, but something was dropped)."""
    detail: str
    """One human sentence; never contains coordinates."""
    device_id: str | None


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    device_id: str
    status: DeviceStatus


Uplink = Fix | DeviceEvent | StatusUpdate


@dataclass(slots=True)
class Parsed:
    # No default factories: one is made per message, and they tripled its __init__.
    uplinks: list[Uplink]
    rejections: list[Rejection]


def parse_uplink(
    topics: Topics,
    topic: str,
    payload: bytes,
    now_ms: int,
    is_known: Callable[[str], bool],
) -> Parsed:
    """Decode one MQTT message. A backlog array keeps its good fixes, sorted by seq. Device time
    is not judged here: nabij places messages on its own clock (see `timing`)."""
    parsed = Parsed([], [])
    split = topics.parse(topic)
    if split is None:
        parsed.rejections.append(Rejection("unknown_topic", "Not a device topic.", None))
        return parsed
    device_id, kind = split
    if kind not in ("fix", "event", "status"):
        detail = f"Topic kind {kind!r} is not an uplink."
        parsed.rejections.append(Rejection("unknown_topic", detail, device_id))
        return parsed
    if not is_known(device_id):
        detail = "Device is not part of any order."
        parsed.rejections.append(Rejection("unknown_device", detail, device_id))
        return parsed
    if kind == "fix":
        _parse_fixes(payload, device_id, parsed)
    elif kind == "event":
        _parse_event(payload, device_id, now_ms, parsed)
    else:
        try:
            status = status_decoder.decode(payload)
        except msgspec.DecodeError as err:
            parsed.rejections.append(_decode_rejection(err, device_id))
        else:
            # Presence is taken whatever its ts says: a retained last will must not be lost.
            parsed.uplinks.append(StatusUpdate(device_id, status))
    return parsed


def _parse_fixes(payload: bytes, device_id: str, parsed: Parsed) -> None:
    try:
        decoded = fix_payload_decoder.decode(payload)
    except msgspec.ValidationError as err:
        if not payload.lstrip().startswith(b"{"):
            parsed.rejections.append(_decode_rejection(err, device_id))
            return
        decoded = [msgspec.Raw(payload)]  # one fix: judged (and salvaged) like an item
    except msgspec.DecodeError as err:
        parsed.rejections.append(_decode_rejection(err, device_id))
        return
    if isinstance(decoded, Fix):
        if (rejection := _check(decoded, device_id, "")) is None:
            parsed.uplinks.append(decoded)
        else:
            parsed.rejections.append(rejection)
        return
    if not decoded:
        parsed.rejections.append(Rejection("empty_batch", "Backlog array is empty.", device_id))
        return
    if len(decoded) > MAX_BACKLOG_FIXES:
        detail = f"Backlog array holds {len(decoded)} fixes, at most {MAX_BACKLOG_FIXES} allowed."
        parsed.rejections.append(Rejection("batch_too_large", detail, device_id))
        return
    single = len(decoded) == 1 and payload.lstrip().startswith(b"{")
    fixes: list[Fix] = []
    for index, raw in enumerate(decoded):
        where = "" if single else f"Item {index}: "
        fix = _decode_fix(raw, device_id, where, parsed)
        if fix is None:
            continue
        if (rejection := _check(fix, device_id, where)) is None:
            fixes.append(fix)
        else:
            parsed.rejections.append(rejection)
    fixes.sort(key=_seq_of)
    parsed.uplinks.extend(fixes)


def _decode_fix(raw: bytes | msgspec.Raw, device_id: str, where: str, parsed: Parsed) -> Fix | None:
    try:
        return fix_decoder.decode(raw)
    except msgspec.ValidationError as err:
        invalid = _decode_rejection(err, device_id, where)
        try:
            core = fix_position_decoder.decode(raw)
        except msgspec.DecodeError:
            parsed.rejections.append(invalid)
            return None
        # A heading of 360 or a battery of -1 must not cost the position: that would blind
        # nabij to the device. The fix is kept without its optional fields, and counted.
        detail = f"{invalid.detail} Position kept; the optional fields were dropped."
        parsed.rejections.append(Rejection("salvaged", detail, device_id))
        return Fix(
            core.device_id,
            core.seq,
            core.ts,
            core.lat,
            core.lon,
            core.acc,
            src=core.src,
            boot=core.boot,
        )
    except msgspec.DecodeError as err:
        parsed.rejections.append(_decode_rejection(err, device_id, where))
        return None


class _SafetyEventCore(msgspec.Struct):
    """What a press or a tamper needs to be acted on; everything else may be broken."""

    device_id: str
    seq: Seq
    type: Literal["aware_button", "strap_tamper"]


_safety_core_decoder: Final = msgspec.json.Decoder(_SafetyEventCore)


def _parse_event(payload: bytes, device_id: str, now_ms: int, parsed: Parsed) -> None:
    try:
        event = event_decoder.decode(payload)
    except msgspec.ValidationError as err:
        invalid = _decode_rejection(err, device_id)
        if (salvaged := _salvage_safety_event(payload, device_id, now_ms)) is not None:
            # A press from a device whose clock reset (ts 0) or that sends a broken optional
            # field is still a press: act on it at server time, and keep the raw for inspection.
            parsed.uplinks.append(salvaged)
            detail = f"{invalid.detail} Acted on as {salvaged.type} at server time."
            invalid = Rejection("salvaged", detail, device_id)
        parsed.rejections.append(invalid)
        return
    except msgspec.DecodeError as err:
        parsed.rejections.append(_decode_rejection(err, device_id))
        return
    if (rejection := _check(event, device_id, "")) is None:
        parsed.uplinks.append(event)
    else:
        parsed.rejections.append(rejection)


def _salvage_safety_event(payload: bytes, device_id: str, now_ms: int) -> DeviceEvent | None:
    try:
        core = _safety_core_decoder.decode(payload)
    except msgspec.DecodeError:
        return None
    if core.device_id != device_id:
        return None
    return DeviceEvent(device_id=device_id, seq=core.seq, ts=now_ms, type=core.type)


def _check(message: Fix | DeviceEvent, device_id: str, where: str) -> Rejection | None:
    if message.device_id != device_id:
        detail = f"{where}Payload device_id differs from the topic's device."
        return Rejection("device_mismatch", detail, device_id)
    return None


def _decode_rejection(err: msgspec.DecodeError, device_id: str, where: str = "") -> Rejection:
    message = str(err).rstrip(".")
    if isinstance(err, msgspec.ValidationError):
        return Rejection("schema", f"{where}Does not match the contract: {message}.", device_id)
    return Rejection("invalid_json", f"{where}Not valid JSON: {message}.", device_id)


def _seq_of(fix: Fix) -> int:
    return fix.seq
