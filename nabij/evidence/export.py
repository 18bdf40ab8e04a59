"""`nabij audit export` and `verify`: a bundle from Redis to a directory, and back to a verdict.

Export first appends its own record (who exports which order, for which role and window) to the
`exports` chain, so the bundle holds the record of its own making; then it takes each writer's
segment, the order's versions, and signs a manifest over the files' hashes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec
import redis

from nabij import order_store
from nabij.evidence import keyfile
from nabij.evidence.bundle import (
    FORMAT,
    Line,
    Manifest,
    Report,
    Scope,
    Segment,
    sign_manifest,
    verify,
)
from nabij.evidence.chain import Entry, Signer
from nabij.evidence.store import SharedLog, export_writer, writers
from nabij.keys import Keys
from nabij.orders import Order
from nabij.settings import AuditSettings

EXPORTS_WRITER: Final = "exports"
RECORDS: Final = "records.jsonl"
CHECKPOINTS: Final = "checkpoints.json"
ORDERS: Final = "orders.json"
PUBLIC_KEY: Final = "public_key.pem"
MANIFEST: Final = "manifest.json"
MANIFEST_SIGNATURE: Final = "manifest.sig"
SIGNED_FILES: Final = (RECORDS, CHECKPOINTS, ORDERS, PUBLIC_KEY)


class ExportData(msgspec.Struct, frozen=True):
    by: str
    order_id: str
    role: str
    since: int | None
    until: int | None


@dataclass(frozen=True, slots=True)
class Exported:
    records: int
    shown: int
    writers: int


def export(  # noqa: PLR0917  # the CLI's arguments, each named at its one call site
    client: redis.Redis,
    keys: Keys,
    signer: Signer,
    settings: AuditSettings,
    scope: Scope,
    by: str,
    now_ms: int,
    out: Path,
) -> Exported:
    data = ExportData(by, scope.order_id, scope.role, scope.since, scope.until)
    entry = Entry("export", now_ms, (scope.order_id,), msgspec.json.encode(data))
    SharedLog(keys, EXPORTS_WRITER, signer).append(client, [entry], now_ms)
    # The export's own record is in the bundle even when the window ends before it.
    segments: dict[str, Segment] = {}
    lines: list[Line] = []
    for writer in writers(client, keys):
        window = (
            scope if writer != EXPORTS_WRITER else Scope(scope.order_id, scope.role, scope.since)
        )
        found = export_writer(client, keys, writer, window)
        if found is not None:
            segments[writer], writer_lines = found
            lines += writer_lines
    versions = _versions(client, keys, scope.order_id)
    files = assemble(segments, lines, versions, signer, scope, by, now_ms, settings)
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (out / name).write_bytes(content)
    shown = sum(1 for line in lines if line.body is not None)
    return Exported(len(lines), shown, len(segments))


def assemble(  # noqa: PLR0917  # what a bundle is made of, each named at its call sites
    segments: Mapping[str, Segment],
    lines: Sequence[Line],
    versions: bytes,
    signer: Signer,
    scope: Scope,
    by: str,
    now_ms: int,
    settings: AuditSettings,
) -> dict[str, bytes]:
    """Every file of a bundle, by name (pure: the export writes them, tests tamper with them)."""
    files = {
        RECORDS: b"".join(msgspec.json.encode(line) + b"\n" for line in lines),
        CHECKPOINTS: msgspec.json.encode(dict(segments)),
        ORDERS: versions,
        PUBLIC_KEY: keyfile.public_pem(signer.key.public_key()),
    }
    manifest = msgspec.json.encode(
        Manifest(
            FORMAT,
            scope.order_id,
            scope.role,
            scope.since,
            scope.until,
            now_ms,
            by,
            signer.fingerprint,
            {str(cls): seconds for cls, seconds in settings.retention_s.items()},
            {name: hashlib.sha256(content).hexdigest() for name, content in files.items()},
        )
    )
    files[MANIFEST] = manifest
    files[MANIFEST_SIGNATURE] = sign_manifest(signer.key, manifest).encode() + b"\n"
    return files


def verify_files(files: Mapping[str, bytes], expected_key: bytes | None = None) -> Report:
    """Verify a bundle's files (by name); `expected_key` (a PEM got out of band) pins the key
    instead of trusting the bundle's own."""
    key = keyfile.load_public(expected_key if expected_key is not None else files[PUBLIC_KEY])
    signed = {name: files.get(name, b"") for name in SIGNED_FILES}
    signature = files.get(MANIFEST_SIGNATURE, b"").decode().strip()
    report = verify(files.get(MANIFEST, b""), signature, signed, key)
    if expected_key is None:
        report.notes.append("key: the bundle's own public_key.pem (pin one with --key)")
    return report


def _versions(client: redis.Redis, keys: Keys, order_id: str) -> bytes:
    """Every version that added, changed or ended the order, as its evidence records hold it."""
    changes: list[object] = []
    previous: Sequence[Order] = []
    for version in order_store.history(client, keys):
        for entry in order_store.change_entries(previous, version):
            if order_id in entry.orders:
                changes.append(json.loads(entry.data))
        previous = version.orders
    return json.dumps(changes, indent=2).encode() + b"\n"


def verify_directory(directory: Path, expected_key: bytes | None = None) -> Report:
    """`verify_files` of the bundle in `directory` (a missing file reads as empty)."""
    names = (*SIGNED_FILES, MANIFEST, MANIFEST_SIGNATURE)
    return verify_files({name: _read(directory / name) for name in names}, expected_key)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
