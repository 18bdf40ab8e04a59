"""The chain's pure core against an independent reference: records decode to what was given,
each head is SHA-256 over the previous head and the envelope's leaf, checkpoints verify."""

from __future__ import annotations

import hashlib

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from nabij.evidence.chain import (
    RECORD_CLASSES,
    ChainHead,
    Entry,
    body_decoder,
    checkpoint_signed,
    envelope_decoder,
    extend,
)
from tests.evidence.factories import SIGNER

entries_strategy = st.lists(
    st.builds(
        Entry,
        cls=st.sampled_from(RECORD_CLASSES),
        at=st.integers(0, 2**53),
        orders=st.lists(st.text(min_size=1, max_size=12), max_size=3).map(tuple),
        data=st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=20)).map(
            msgspec.json.encode
        ),
    ),
    min_size=1,
    max_size=20,
)


@given(entries=entries_strategy, writer=st.text(min_size=1, max_size=20))
def test_sealed_records_decode_to_their_entries_and_chain_as_documented(
    entries: list[Entry], writer: str
) -> None:
    """The bytes `extend` assembles are the documented JSON, and the heads follow the formula
    in docs/evidence.md, computed here with hashlib alone."""
    nonces = [bytes([n]) * 16 for n in range(len(entries))]
    sealed, end = extend(writer, ChainHead(), entries, nonces)
    head = bytes(32)
    for n, (record, entry) in enumerate(zip(sealed, entries, strict=True), start=1):
        envelope = envelope_decoder.decode(record.envelope)
        assert (envelope.writer, envelope.seq, envelope.cls) == (writer, n, entry.cls)
        assert (envelope.at, envelope.orders) == (entry.at, entry.orders)
        assert envelope.body_sha256 == hashlib.sha256(record.body).hexdigest()
        body = body_decoder.decode(record.body)
        assert (bytes(body.data), body.nonce) == (entry.data, nonces[n - 1].hex())
        leaf = hashlib.sha256(b"\x00" + record.envelope).digest()
        head = hashlib.sha256(b"\x01" + head + leaf).digest()
        assert record.head == head
    assert end == ChainHead(len(entries), head)


@given(entries=entries_strategy, split=st.integers(0, 20))
def test_extending_in_steps_equals_extending_at_once(entries: list[Entry], split: int) -> None:
    """A writer's batches chain on: two appends give the heads of one."""
    nonces = [bytes([n]) * 16 for n in range(len(entries))]
    _, whole = extend("w", ChainHead(), entries, nonces)
    _, first = extend("w", ChainHead(), entries[:split], nonces[:split])
    _, second = extend("w", first, entries[split:], nonces[split:])
    assert second == whole


def test_a_checkpoint_verifies_and_a_changed_one_does_not() -> None:
    checkpoint = SIGNER.checkpoint("proximity", ChainHead(3, bytes(32)), 1_790_000_000_000)
    public = SIGNER.key.public_key()
    assert checkpoint_signed(public, checkpoint)
    forged = msgspec.structs.replace(
        checkpoint, body=checkpoint.body.replace('"size":3', '"size":2')
    )
    assert not checkpoint_signed(public, forged)


def test_a_chain_head_round_trips_through_its_stored_form() -> None:
    head = ChainHead(42, hashlib.sha256(b"x").digest())
    assert ChainHead.decode(head.encode()) == head
    assert ChainHead.decode(None) == ChainHead()
