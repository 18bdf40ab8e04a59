"""What device firmware keeps until nabij confirms it has committed it.

A broker acknowledges a QoS 1 message on receipt and may still lose it in a crash before nabij
has it. So firmware keeps every fix and event it sent until a `Committed` confirmation covers it
(cumulative: everything up to `seq` of `boot`), and sends what it still keeps again, oldest first,
after a reconnect or once the oldest has waited too long. nabij takes a repeat as a duplicate.

After sending again, new fixes and events are held back until nabij confirms again (it then has
the repeats, or as much of them as it will get): otherwise, were the repeats lost too (nabij not
subscribed yet after a broker restart), a newer message would reach nabij first and the repeats
would come too late to be used (nabij still accounts for them, and its confirmation waits for
every gap to be filled). A press or a
tamper is never held back (nabij takes it whenever it comes; it moves no counter, so only a later
message's confirmation covers it). While disconnected nothing is handed to the MQTT client: paho
does not keep the order of what it queued offline, the reconnect's resend does.

All of this starts with nabij's first confirmation: a nabij that sends none (`commit_acks =
false`, or an older version) gets what firmware without it sends, and only the newest
`KEPT_UNCONFIRMED_MAX` messages are kept meanwhile.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from nabij.contract import Committed

KEPT_UNCONFIRMED_MAX = 1000


@dataclass(frozen=True, slots=True)
class Kept:
    boot: str | None
    seq: int
    """Highest seq in the message (a backlog array holds many)."""
    kind: str
    payload: bytes
    counted: bool
    """Moves nabij's counter (every fix and event but a press or a tamper)."""
    sent_ms: int | None = None
    """Device time it was last sent; None while held back."""


class Unconfirmed:
    """Messages not yet confirmed, oldest first (any thread: paho's or the device's)."""

    def __init__(self) -> None:
        self._kept: list[Kept] = []
        self._resending = False
        self._confirming = False
        """nabij has confirmed something: it will confirm the rest."""
        self._lock = threading.Lock()

    def keep(self, message: Kept, now_ms: int, *, connected: bool) -> bool:
        """Keep `message`; True: send it now, False: held back (offline, or behind repeats)."""
        with self._lock:
            if not self._confirming:
                self._kept.append(replace(message, sent_ms=now_ms))
                del self._kept[:-KEPT_UNCONFIRMED_MAX]
                return True
            send = connected and not (self._resending and message.counted)
            self._kept.append(replace(message, sent_ms=now_ms) if send else message)
            return send

    def confirm(self, ack: Committed, current_boot: str | None, now_ms: int) -> list[Kept]:
        """Forget what `ack` covers: its boot up to its seq, and, once nabij confirms the current
        boot, every earlier boot (sent before, so taken or refused before). After a re-send,
        returns the messages held back, oldest first: they may go out now."""

        def covered(kept: Kept) -> bool:
            if kept.boot == ack.boot:
                return kept.seq <= ack.seq
            return ack.boot == current_boot

        with self._lock:
            self._confirming = True
            self._kept = [k for k in self._kept if not covered(k)]
            if not self._resending:
                return []
            self._resending = False
            released = [k for k in self._kept if k.sent_ms is None]
            self._kept = [
                k if k.sent_ms is not None else replace(k, sent_ms=now_ms) for k in self._kept
            ]
            return released

    def overdue(self, now_ms: int, after_ms: int) -> bool:
        """Whether a message sent has waited `after_ms` without a confirmation."""
        with self._lock:
            sent = [k.sent_ms for k in self._kept if k.sent_ms is not None]
            return self._confirming and bool(sent) and now_ms - min(sent) >= after_ms

    def take_for_resend(self, now_ms: int) -> list[Kept]:
        """Everything kept, oldest first, marked as sent at `now_ms`; what comes next is held
        back until these are confirmed (nothing before nabij's first confirmation)."""
        with self._lock:
            if not self._confirming:
                return []
            self._kept = [replace(k, sent_ms=now_ms) for k in self._kept]
            self._resending = any(k.counted for k in self._kept)
            return list(self._kept)

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)
