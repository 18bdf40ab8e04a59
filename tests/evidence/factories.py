"""Bundles built in memory from a made-up history of two orders, and ways to tamper with them."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nabij.evidence.bundle import Line, Role, Scope, Segment, lines_of
from nabij.evidence.chain import ChainHead, Entry, RecordClass, Signer, extend
from nabij.evidence.export import RECORDS, assemble
from nabij.settings import AuditSettings

SIGNER = Signer.of(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
T0 = 1_790_000_000_000
CLASSES: tuple[RecordClass, ...] = ("uplink", "decision", "command", "notice", "request")


def history(writer: str, count: int) -> list[Entry]:
    """`count` records alternating between orders O1 and O2, one a second."""
    entries = []
    for n in range(count):
        order = f"O{n % 2 + 1}"
        cls = CLASSES[n % len(CLASSES)]
        data = b'{"queue":"probation","n":%d,"lat":52.3%d}' % (n, n)
        entries.append(Entry(cls, T0 + n * 1000, (order,), data))
    return entries


GENESIS_HEAD = ChainHead()


def sealed_chain(
    writer: str, entries: Sequence[Entry], start: ChainHead = GENESIS_HEAD
) -> tuple[list[tuple[int, bytes]], ChainHead]:
    nonces = [n.to_bytes(16, "big") for n in range(start.size, start.size + len(entries))]
    sealed, head = extend(writer, start, entries, nonces)
    return [(r.seq, r.stored()) for r in sealed], head


def bundle(
    role: Role = "police",
    counts: dict[str, int] | None = None,
    *,
    since: int | None = None,
    until: int | None = None,
) -> dict[str, bytes]:
    """A bundle of order O1; each writer's segment starts at a signed checkpoint after 3 records
    when `since` is given, else at the first record."""
    scope = Scope("O1", role, since, until)
    segments: dict[str, Segment] = {}
    lines: list[Line] = []
    for writer, count in (counts or {"proximity": 12, "gateway:gateway-1": 7}).items():
        entries = history(writer, count)
        start, start_cp = ChainHead(), None
        if since is not None:
            stored, start = sealed_chain(writer, entries[:3])
            start_cp = SIGNER.checkpoint(writer, start, T0 + 2000)
            entries = entries[3:]
        stored, end = sealed_chain(writer, entries, start)
        end_cp = SIGNER.checkpoint(writer, end, T0 + count * 1000)
        segments[writer] = Segment(start_cp, end_cp)
        lines += lines_of(stored, start, end_cp.fields(), scope)
    return assemble(
        segments, lines, b"[]\n", SIGNER, scope, "officer 7", T0 + 60_000, AuditSettings()
    )


def record_lines(files: dict[str, bytes]) -> list[bytes]:
    return files[RECORDS].splitlines(keepends=True)


def with_lines(files: dict[str, bytes], lines: Sequence[bytes]) -> dict[str, bytes]:
    return {**files, RECORDS: b"".join(lines)}
