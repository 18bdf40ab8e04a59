"""`verify` names the first altered, removed, inserted or reordered record of a bundle, or its
cut-off tail, from the bundle's bytes alone (pure: no Redis, no files)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nabij.evidence.bundle import Line, line_decoder
from nabij.evidence.chain import envelope_decoder
from nabij.evidence.export import CHECKPOINTS, MANIFEST, ORDERS, verify_files
from tests.evidence.factories import bundle, record_lines, with_lines

PROXIMITY_LINES = 12  # the proximity writer's records come first in records.jsonl


def _seq(line: bytes) -> int:
    return envelope_decoder.decode(line_decoder.decode(line).envelope).seq


def _first_problem(files: dict[str, bytes]) -> str:
    report = verify_files(files)
    assert not report.ok
    return report.problems[0]


def test_an_untouched_bundle_verifies() -> None:
    """Every chain leads to its signed checkpoint and every record of O1 is there in full."""
    report = verify_files(bundle())
    assert report.ok, report.problems
    assert "order O1: 10 records in full, 0 withheld" in report.notes[0]


def test_a_bundle_starting_at_a_checkpoint_verifies() -> None:
    """A window that starts later takes each chain from the signed checkpoint before it."""
    assert verify_files(bundle(since=1_790_000_004_000)).ok


def test_a_probation_bundle_verifies_with_positions_withheld() -> None:
    """Uplinks and decisions keep only their envelope for probation; the chain still holds."""
    files = bundle("probation")
    report = verify_files(files)
    assert report.ok, report.problems
    for raw in record_lines(files):
        line = line_decoder.decode(raw)
        envelope = envelope_decoder.decode(line.envelope)
        if envelope.cls in {"uplink", "decision"}:
            assert line.body is None
        assert "52.3" not in line.envelope


@given(index=st.integers(0, PROXIMITY_LINES - 1))
def test_altering_any_record_is_named(index: int) -> None:
    """A changed byte in a record's envelope or body names that record."""
    lines = record_lines(bundle())
    seq = _seq(lines[index])
    lines[index] = lines[index].replace(b'\\"at\\":', b'\\"at\\":1', 1)
    assert f"record seq {seq} (line {index + 1}) altered" in _first_problem(
        with_lines(bundle(), lines)
    )


def test_altering_a_body_is_named() -> None:
    """The body no longer hashes to what its envelope states."""
    files = bundle()
    lines = record_lines(files)
    line = line_decoder.decode(lines[0])
    assert line.body is not None
    lines[0] = (
        msgspec.json.encode(Line(line.envelope, line.head, line.body.replace("52.30", "52.31")))
        + b"\n"
    )
    assert "record seq 1 (line 1) altered: body differs" in _first_problem(with_lines(files, lines))


@given(index=st.integers(0, PROXIMITY_LINES - 2))
def test_deleting_any_record_is_named(index: int) -> None:
    files = bundle()
    lines = record_lines(files)
    seq = _seq(lines.pop(index))
    assert f"proximity: record seq {seq} removed" in _first_problem(with_lines(files, lines))


@given(index=st.integers(0, PROXIMITY_LINES - 1), at=st.integers(0, PROXIMITY_LINES))
def test_inserting_a_copy_of_any_record_is_named(index: int, at: int) -> None:
    files = bundle()
    lines = record_lines(files)
    lines.insert(at, lines[index])
    original = index if index < at else index + 1
    problem = _first_problem(with_lines(files, lines))
    assert "inserted record" in problem, problem
    # Two identical lines: either may be called the inserted one.
    assert f"line {at + 1}:" in problem or f"line {original + 1}:" in problem, problem


def test_inserting_a_made_up_record_is_named() -> None:
    """A record with a seq beyond the checkpoint, or a second record with a taken seq."""
    files = bundle()
    lines = record_lines(files)
    forged = lines[3].replace(b'\\"seq\\":4', b'\\"seq\\":40')
    problem = _first_problem(with_lines(files, [*lines[:5], forged, *lines[5:]]))
    assert "proximity: line 6: inserted record (seq 40 is outside the checkpoints)" in problem


@given(index=st.integers(0, PROXIMITY_LINES - 2))
def test_swapping_any_two_neighbours_is_named(index: int) -> None:
    files = bundle()
    lines = record_lines(files)
    lines[index], lines[index + 1] = lines[index + 1], lines[index]
    seq = _seq(lines[index + 1])
    assert f"proximity: record seq {seq} reordered" in _first_problem(with_lines(files, lines))


@pytest.mark.parametrize("cut", [1, 3])
def test_a_cut_off_tail_is_named(cut: int) -> None:
    """The last records of the gateway's chain (the end of the file) are gone."""
    files = bundle()
    lines = record_lines(files)
    problem = _first_problem(with_lines(files, lines[:-cut]))
    assert f"gateway:gateway-1: tail cut off: records after seq {7 - cut} are missing" in problem


def test_a_body_withheld_from_a_police_bundle_is_incomplete() -> None:
    """A record of the order without its body, not withheld by role nor past retention."""
    files = bundle()
    lines = record_lines(files)
    line = line_decoder.decode(lines[0])
    lines[0] = msgspec.json.encode(Line(line.envelope, line.head)) + b"\n"
    problem = _first_problem(with_lines(files, lines))
    assert "proximity: record seq 1 (line 1) about order O1 has no body: incomplete" in problem


@pytest.mark.parametrize("name", [CHECKPOINTS, ORDERS, MANIFEST])
def test_any_other_file_altered_fails(name: str) -> None:
    files = bundle()
    files[name] = files[name].replace(b"1", b"2", 1) if name != ORDERS else b"[{}]\n"
    assert not verify_files(files).ok


def test_a_key_got_out_of_band_must_match() -> None:
    """Pinning another key (a re-signed bundle) fails the manifest's signature."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from nabij.evidence.keyfile import public_pem

    other = public_pem(Ed25519PrivateKey.generate().public_key())
    assert "manifest.json altered" in verify_files(bundle(), expected_key=other).problems[0]
