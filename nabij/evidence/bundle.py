"""Pure core of a bundle: which records keep their body, the lines written, and verification.

A bundle holds, for each writer, one contiguous segment of its chain between two signed
checkpoints (the start one absent when the segment starts at the first record): every record of
the segment as a line of `records.jsonl`, with its body only when it is about the exported order,
inside the time window, and allowed to the role. Verification recomputes every chain from the
lines alone and names the first record that was altered, removed, inserted or reordered, or the
cut-off tail. The algorithm is in docs/evidence.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from nabij.evidence.chain import (
    ChainHead,
    Checkpoint,
    CheckpointBody,
    Envelope,
    RecordClass,
    chain_hash,
    checkpoint_signed,
    envelope_decoder,
    key_fingerprint,
    leaf_hash,
    split_stored,
)
from nabij.failures import NabijError

FORMAT: Final = "nabij-audit-bundle/v1"
MANIFEST_CONTEXT: Final = b"nabij-audit-manifest/v1\n"
Role = Literal["police", "probation"]
# What a probation export leaves without body (leaf hash only): anything that holds a position
# (raw uplinks, the proximity decisions with their exact facts) and the police queue's notices.
WITHHELD: Final[Mapping[Role, frozenset[RecordClass]]] = {
    "police": frozenset(),
    "probation": frozenset({"uplink", "decision"}),
}
POLICE_ONLY_DATA: Final = b'"queue":"police"'
"""A notice record's data starts with its queue: a probation export withholds police notices."""


class Line(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """One line of records.jsonl."""

    envelope: str
    head: str
    """Chain head after this record, hex: lets the verifier name the first altered record."""
    body: str | None = None


class Segment(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A writer's part of the bundle: from after `start` (None: from the first record) to `end`."""

    start: Checkpoint | None
    end: Checkpoint


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: str
    order_id: str
    role: Role
    since: int | None
    until: int | None
    exported_at: int
    exported_by: str
    key: str
    retention_s: dict[str, int]
    """Per record class: a body older than this at export time may be gone (0: kept forever)."""
    files: dict[str, str]
    """File name -> SHA-256 hex."""


@dataclass(frozen=True, slots=True)
class Scope:
    """What a bundle shows in full."""

    order_id: str
    role: Role
    since: int | None = None
    until: int | None = None

    def in_window(self, at: int) -> bool:
        return (self.since is None or at >= self.since) and (self.until is None or at <= self.until)

    def about(self, envelope: Envelope) -> bool:
        return self.order_id in envelope.orders and self.in_window(envelope.at)

    def shows(self, envelope: Envelope, body: bytes) -> bool:
        if not self.about(envelope) or envelope.cls in WITHHELD[self.role]:
            return False
        return not (self.role == "probation" and envelope.cls == "notice" and _police(body))


def _police(body: bytes) -> bool:
    return POLICE_ONLY_DATA in body.split(b'"data":', 1)[-1][:32]


class ChainBrokenError(NabijError):
    """The stored chain does not reach its checkpoint: the store itself was altered."""


def lines_of(
    stored: Iterable[tuple[int, bytes]], start: ChainHead, end: CheckpointBody, scope: Scope
) -> list[Line]:
    """The bundle lines of records start.size+1 .. end.size (stored form, in seq order)."""
    head = start.head
    expected = start.size + 1
    lines = []
    for seq, raw in stored:
        envelope, body = split_stored(raw)
        fields = envelope_decoder.decode(envelope)
        if seq != expected or fields.seq != seq:
            raise ChainBrokenError(f"record {expected} missing from the store (found {seq})")
        head = chain_hash(head, leaf_hash(envelope))
        shown = body if body is not None and scope.shows(fields, body) else None
        lines.append(Line(envelope.decode(), head.hex(), None if shown is None else shown.decode()))
        expected += 1
    if expected - 1 != end.size or head.hex() != end.head:
        raise ChainBrokenError(f"the stored chain of {end.writer} does not reach its checkpoint")
    return lines


def past_retention(
    envelope: Envelope, retention_s: Mapping[RecordClass, int] | Mapping[str, int], now_ms: int
) -> bool:
    """Whether the body of the record may be gone by `now_ms` (0 or absent: kept forever)."""
    keep_s = retention_s.get(envelope.cls, 0)
    return bool(keep_s) and envelope.at + keep_s * 1000 <= now_ms


def sign_manifest(key: Ed25519PrivateKey, manifest: bytes) -> str:
    return key.sign(MANIFEST_CONTEXT + manifest).hex()


# --- verification -----------------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class _Read:
    number: int
    """Line number in records.jsonl, from 1."""
    envelope: Envelope
    line: Line


line_decoder: Final = msgspec.json.Decoder(Line)
segments_decoder: Final = msgspec.json.Decoder(dict[str, Segment])
manifest_decoder: Final = msgspec.json.Decoder(Manifest)


def verify(
    manifest_raw: bytes,
    manifest_signature: str,
    files: Mapping[str, bytes],
    key: Ed25519PublicKey,
) -> Report:
    """Everything a third party checks, from the bundle's bytes alone."""
    report = Report()
    fingerprint = key_fingerprint(key)
    try:
        key.verify(bytes.fromhex(manifest_signature), MANIFEST_CONTEXT + manifest_raw)
    except (InvalidSignature, ValueError):
        report.problems.append("manifest.json altered: its signature does not verify")
        return report
    manifest = manifest_decoder.decode(manifest_raw)
    if manifest.key != fingerprint:
        report.problems.append("public_key.pem is not the key the manifest names")
    try:
        segments = segments_decoder.decode(files["checkpoints.json"])
    except msgspec.DecodeError as err:
        report.problems.append(f"checkpoints.json altered: unreadable ({err})")
        return report
    by_writer = _read_lines(files["records.jsonl"], report)
    for writer in sorted(set(by_writer) - set(segments)):
        report.problems.append(f"records of writer {writer} that no checkpoint covers: inserted")
    for writer, segment in sorted(segments.items()):
        problem = _verify_segment(writer, segment, by_writer.get(writer, []), key, fingerprint)
        if problem is not None:
            report.problems.append(problem)
    if report.ok:
        _check_complete(manifest, by_writer, report)
    for name, digest in sorted(manifest.files.items()):
        if hashlib.sha256(files.get(name, b"")).hexdigest() != digest:
            report.problems.append(f"{name} altered: its SHA-256 differs from the manifest's")
    return report


def _read_lines(raw: bytes, report: Report) -> dict[str, list[_Read]]:
    by_writer: dict[str, list[_Read]] = {}
    for number, text in enumerate(raw.splitlines(), start=1):
        try:
            line = line_decoder.decode(text)
            envelope = envelope_decoder.decode(line.envelope)
        except msgspec.DecodeError as err:
            report.problems.append(f"line {number} of records.jsonl altered: unreadable ({err})")
            continue
        by_writer.setdefault(envelope.writer, []).append(_Read(number, envelope, line))
    return by_writer


def _verify_segment(
    writer: str, segment: Segment, reads: Sequence[_Read], key: Ed25519PublicKey, fingerprint: str
) -> str | None:
    """The first problem of one writer's segment, or None."""
    for name, checkpoint in (("start", segment.start), ("end", segment.end)):
        if checkpoint is None:
            continue
        if not checkpoint_signed(key, checkpoint):
            return f"{writer}: {name} checkpoint altered: its signature does not verify"
        signed = checkpoint.fields()
        if signed.key != fingerprint:
            return f"{writer}: {name} checkpoint signed with another key ({signed.key})"
        if signed.writer != writer:
            return f"{writer}: {name} checkpoint belongs to writer {signed.writer}"
    start = (
        ChainHead()
        if segment.start is None
        else ChainHead(segment.start.fields().size, bytes.fromhex(segment.start.fields().head))
    )
    end = segment.end.fields()
    head, expected = start.head, start.size + 1
    for index, read in enumerate(reads):
        seq, where = read.envelope.seq, f"line {read.number}"
        if seq > end.size or seq <= start.size:
            return f"{writer}: {where}: inserted record (seq {seq} is outside the checkpoints)"
        if seq < expected:
            return f"{writer}: {where}: inserted record (seq {seq} again)"
        if seq > expected and any(r.envelope.seq == seq for r in reads[index + 1 :]):
            return f"{writer}: {where}: inserted record (seq {seq}, which comes again later)"
        if seq > expected:
            later = next((r for r in reads[index + 1 :] if r.envelope.seq == expected), None)
            if later is not None:
                return (
                    f"{writer}: record seq {expected} reordered: at line {later.number}, "
                    f"after seq {seq} ({where})"
                )
            return f"{writer}: record seq {_span(expected, seq - 1)} removed (before {where})"
        body = read.line.body
        if body is not None and hashlib.sha256(body.encode()).hexdigest() != (
            read.envelope.body_sha256
        ):
            return f"{writer}: record seq {seq} ({where}) altered: body differs from its hash"
        head = chain_hash(head, leaf_hash(read.line.envelope.encode()))
        if head.hex() != read.line.head:
            if any(r.envelope.seq == seq for r in reads[index + 1 :]):
                return f"{writer}: {where}: inserted record (a second seq {seq})"
            return f"{writer}: record seq {seq} ({where}) altered"
        expected += 1
    if expected - 1 < end.size:
        return (
            f"{writer}: tail cut off: records after seq {expected - 1} are missing "
            f"(the checkpoint covers up to seq {end.size})"
        )
    if head.hex() != end.head:
        return f"{writer}: the records do not lead to the signed head: altered"
    return None


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}..{last}"


def _check_complete(
    manifest: Manifest, by_writer: Mapping[str, Sequence[_Read]], report: Report
) -> None:
    """Every record about the order in the window has its body, unless the role withholds its
    class or its retention had passed at export time (the manifest, signed, says both)."""
    scope = Scope(manifest.order_id, manifest.role, manifest.since, manifest.until)
    withheld = pruned = shown = 0
    for writer, reads in sorted(by_writer.items()):
        for read in reads:
            envelope = read.envelope
            if not scope.about(envelope):
                continue
            if read.line.body is not None:
                shown += 1
                continue
            if past_retention(envelope, manifest.retention_s, manifest.exported_at):
                pruned += 1
            elif envelope.cls in WITHHELD[manifest.role] or (
                manifest.role == "probation" and envelope.cls == "notice"
            ):
                withheld += 1
            else:
                report.problems.append(
                    f"{writer}: record seq {envelope.seq} (line {read.number}) about order "
                    f"{manifest.order_id} has no body: incomplete"
                )
                return
    report.notes.append(
        f"order {manifest.order_id}: {shown} records in full, {withheld} withheld for role "
        f"{manifest.role}, {pruned} past their retention"
    )
