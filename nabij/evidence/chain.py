"""Pure core of the evidence trail: sealed records, a hash chain per writer, signed checkpoints.

A record is two JSON documents: its *envelope* (writer, seq, class, time, the orders it is
about, and the SHA-256 of its body) and its *body* (a random nonce and the data). The chain
hashes only envelopes, so a record whose body is withheld (another order's, a role's redaction,
past its retention) still takes its place in the chain, and its nonce keeps a withheld body from
being guessed from its hash:

    leaf_n = SHA-256(0x00 || envelope_n)
    head_0 = 32 zero bytes;  head_n = SHA-256(0x01 || head_{n-1} || leaf_n)

A checkpoint states (writer, size, head, at) and is signed with Ed25519 over
`CHECKPOINT_CONTEXT || body`. No clock, file or network is read here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

RecordClass = Literal["uplink", "decision", "command", "notice", "request", "order", "export"]
RECORD_CLASSES: Final[tuple[RecordClass, ...]] = (
    "uplink",
    "decision",
    "command",
    "notice",
    "request",
    "order",
    "export",
)
GENESIS: Final = bytes(32)
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
CHECKPOINT_CONTEXT: Final = b"nabij-audit-checkpoint/v1\n"
NONCE_BYTES: Final = 16


class Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the chain commits to; readable even when the body is withheld."""

    writer: str
    seq: int
    cls: RecordClass = msgspec.field(name="class")
    at: int
    """ms since the epoch on nabij's clock (receipt for an uplink, commit time otherwise)."""
    orders: tuple[str, ...]
    body_sha256: str


class Body(msgspec.Struct, frozen=True):
    nonce: str
    data: msgspec.Raw


class Entry(NamedTuple):
    """A record before it has a place in a chain: class, time, orders, data (JSON bytes).

    (Named tuples, this and `Sealed`: one is made per fix on the decision path.)"""

    cls: RecordClass
    at: int
    orders: tuple[str, ...]
    data: bytes


class Sealed(NamedTuple):
    seq: int
    envelope: bytes
    body: bytes
    head: bytes

    def stored(self) -> bytes:
        """The form kept in Redis: envelope, newline, body (JSON never holds a raw newline)."""
        return self.envelope + b"\n" + self.body


_envelope_encoder = msgspec.json.Encoder()
envelope_decoder: Final = msgspec.json.Decoder(Envelope)
body_decoder: Final = msgspec.json.Decoder(Body)


def leaf_hash(envelope: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + envelope).digest()


def chain_hash(previous: bytes, leaf: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + previous + leaf).digest()


def split_stored(stored: bytes) -> tuple[bytes, bytes | None]:
    envelope, _, body = stored.partition(b"\n")
    return envelope, (body or None)


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a writer's chain stands: records so far and the head after the last."""

    size: int = 0
    head: bytes = GENESIS

    def encode(self) -> bytes:
        return f"{self.size} {self.head.hex()}".encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> ChainHead:
        if raw is None:
            return cls()
        size, head = raw.decode().split()
        return cls(int(size), bytes.fromhex(head))


def extend(
    writer: str, start: ChainHead, entries: Iterable[Entry], nonces: Iterable[bytes]
) -> tuple[list[Sealed], ChainHead]:
    """Seal `entries` after `start`; returns them and the new head.

    The envelope and body are assembled from bytes (JSON-encoded pieces, each class and order
    set encoded once per call), not by encoding a struct per record: this runs for every fix.
    `Envelope` and `Body` decode what it makes (tests/evidence/test_chain.py).
    """
    sha256, encode = hashlib.sha256, _envelope_encoder.encode
    opening = b'{"writer":' + encode(writer) + b',"seq":'
    middles: dict[tuple[str, tuple[str, ...]], bytes] = {}
    sealed = []
    size, head = start.size, start.head
    for entry, nonce in zip(entries, nonces, strict=True):
        size += 1
        body = b'{"nonce":"' + nonce.hex().encode() + b'","data":' + entry.data + b"}"
        middle = middles.get((entry.cls, entry.orders))
        if middle is None:
            middle = b',"class":' + encode(entry.cls) + b',"orders":' + encode(entry.orders)
            middles[entry.cls, entry.orders] = middle
        envelope = b"".join(
            (
                opening,
                str(size).encode(),
                middle,
                b',"at":',
                str(entry.at).encode(),
                b',"body_sha256":"',
                sha256(body).hexdigest().encode(),
                b'"}',
            )
        )
        head = chain_hash(head, leaf_hash(envelope))
        sealed.append(Sealed(size, envelope, body, head))
    return sealed, ChainHead(size, head)


class CheckpointBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    writer: str
    size: int
    head: str
    at: int
    key: str
    """Fingerprint of the public key (`key_fingerprint`)."""


class Checkpoint(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    body: str
    """The signed JSON text, kept verbatim so that any implementation checks the same bytes."""
    signature: str
    """Ed25519 signature, hex."""

    def fields(self) -> CheckpointBody:
        return msgspec.json.decode(self.body, type=CheckpointBody)


checkpoint_decoder: Final = msgspec.json.Decoder(Checkpoint)


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex: what a court compares out of band."""
    return hashlib.sha256(public_bytes(key)).hexdigest()


def sign_checkpoint(
    key: Ed25519PrivateKey, writer: str, head: ChainHead, at_ms: int, fingerprint: str
) -> Checkpoint:
    body = msgspec.json.encode(
        CheckpointBody(writer, head.size, head.head.hex(), at_ms, fingerprint)
    )
    signature = key.sign(CHECKPOINT_CONTEXT + body)
    return Checkpoint(body.decode(), signature.hex())


def checkpoint_signed(key: Ed25519PublicKey, checkpoint: Checkpoint) -> bool:
    try:
        key.verify(
            bytes.fromhex(checkpoint.signature), CHECKPOINT_CONTEXT + checkpoint.body.encode()
        )
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Signer:
    """The writer's key and its fingerprint, computed once."""

    key: Ed25519PrivateKey
    fingerprint: str

    @classmethod
    def of(cls, key: Ed25519PrivateKey) -> Signer:
        return cls(key, key_fingerprint(key.public_key()))

    def checkpoint(self, writer: str, head: ChainHead, at_ms: int) -> Checkpoint:
        return sign_checkpoint(self.key, writer, head, at_ms, self.fingerprint)
