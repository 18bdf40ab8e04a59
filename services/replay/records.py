"""The recorded log: one JSON line per message the proximity service received.

A line is `{"topic", "payload" | "payload_b64", "received_ms"}` (the payload as text when it is
UTF-8, else base64). Unreadable lines are skipped and counted, never fatal.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Recorded:
    topic: str
    payload: bytes
    received_ms: int


def encode_line(topic: str, payload: bytes, received_ms: int) -> str:
    """One log line (no newline)."""
    try:
        body: dict[str, Any] = {"topic": topic, "payload": payload.decode("utf-8")}
    except UnicodeDecodeError:
        body = {"topic": topic, "payload_b64": base64.b64encode(payload).decode("ascii")}
    body["received_ms"] = received_ms
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def decode_lines(lines: Iterable[str]) -> tuple[list[Recorded], int]:
    """The records of a log, and how many lines were unreadable (skipped, never fatal)."""
    records: list[Recorded] = []
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            topic, received_ms = raw["topic"], raw["received_ms"]
            if "payload_b64" in raw:
                payload = base64.b64decode(raw["payload_b64"], validate=True)
            else:
                payload = str(raw["payload"]).encode("utf-8")
            if not isinstance(topic, str) or not isinstance(received_ms, int):
                raise TypeError("topic or received_ms of the wrong type")
        except (ValueError, KeyError, TypeError, binascii.Error):
            bad += 1
            continue
        records.append(Recorded(topic, payload, received_ms))
    return records, bad


def read_log(path: Path) -> tuple[list[Recorded], int]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        return decode_lines(handle)
