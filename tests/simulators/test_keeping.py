"""Firmware keeps what nabij has not confirmed, sends it again in order, and holds new messages
back behind the repeats (`simulators.keeping`)."""

from __future__ import annotations

from nabij.contract import Committed
from simulators.keeping import KEPT_UNCONFIRMED_MAX, Kept, Unconfirmed


def _fix(seq: int, boot: str = "b1") -> Kept:
    return Kept(boot, seq, "fix", f"fix {seq}".encode(), counted=True)


def _press(seq: int) -> Kept:
    return Kept("b1", seq, "event", b"press", counted=False)


def _confirming() -> Unconfirmed:
    """Kept messages of a device that has heard from a nabij that confirms."""
    kept = Unconfirmed()
    kept.confirm(Committed(seq=0, boot="b0"), current_boot="b1", now_ms=0)
    return kept


def test_a_confirmation_forgets_everything_up_to_its_seq_and_keeps_the_rest() -> None:
    """Cumulative: `Committed(seq=2)` lets go of seqs 0-2 of that boot, never of seq 3."""
    kept = _confirming()
    for seq in range(4):
        assert kept.keep(_fix(seq), now_ms=seq, connected=True)
    assert kept.confirm(Committed(seq=2, boot="b1"), current_boot="b1", now_ms=10) == []
    assert [k.seq for k in kept.take_for_resend(now_ms=11)] == [3]


def test_a_confirmation_of_the_current_boot_forgets_earlier_boots_only_then() -> None:
    """Messages of an ended boot go once nabij confirms the new boot; a confirmation of the old
    boot does not touch the new one's messages."""
    kept = _confirming()
    kept.keep(_fix(5, boot="b1"), now_ms=0, connected=True)
    kept.keep(_fix(0, boot="b2"), now_ms=1, connected=True)
    kept.confirm(Committed(seq=9, boot="b1"), current_boot="b2", now_ms=2)
    assert [(k.boot, k.seq) for k in kept.take_for_resend(now_ms=3)] == [("b2", 0)]
    kept.keep(_fix(6, boot="b1"), now_ms=4, connected=True)
    kept.confirm(Committed(seq=0, boot="b2"), current_boot="b2", now_ms=5)
    assert len(kept) == 0


def test_after_a_resend_new_fixes_wait_until_the_repeats_are_confirmed_but_a_press_never() -> None:
    """Were the repeats lost again, a newer fix reaching nabij first would make them late: new
    fixes are held back until nabij confirms the repeats, then released oldest first. A press
    goes out at once."""
    kept = _confirming()
    kept.keep(_fix(0), now_ms=0, connected=True)
    assert [k.seq for k in kept.take_for_resend(now_ms=100)] == [0]
    assert not kept.keep(_fix(1), now_ms=101, connected=True)
    assert kept.keep(_press(2), now_ms=102, connected=True)
    assert not kept.keep(_fix(3), now_ms=103, connected=True)
    released = kept.confirm(Committed(seq=0, boot="b1"), current_boot="b1", now_ms=104)
    assert [k.seq for k in released] == [1, 3]
    assert kept.keep(_fix(4), now_ms=105, connected=True)


def test_only_a_message_sent_and_unconfirmed_for_long_enough_is_overdue() -> None:
    """The resend timer runs from when a message was last sent; held-back ones do not count."""
    kept = _confirming()
    assert not kept.overdue(now_ms=10_000, after_ms=1000)
    kept.keep(_fix(0), now_ms=0, connected=True)
    assert not kept.overdue(now_ms=999, after_ms=1000)
    assert kept.overdue(now_ms=1000, after_ms=1000)
    kept.take_for_resend(now_ms=1000)
    assert not kept.overdue(now_ms=1999, after_ms=1000)


def test_offline_nothing_goes_to_the_client_and_the_reconnect_sends_it_in_order() -> None:
    """paho does not keep the order of what it queues offline: firmware holds it instead, and
    the reconnect's resend sends everything kept, oldest first."""
    kept = _confirming()
    assert kept.keep(_fix(0), now_ms=0, connected=True)
    assert not kept.keep(_fix(1), now_ms=1, connected=False)
    assert not kept.keep(_press(2), now_ms=2, connected=False)
    assert [k.seq for k in kept.take_for_resend(now_ms=3)] == [0, 1, 2]


def test_before_any_confirmation_firmware_behaves_as_without_keeping() -> None:
    """Against a nabij that sends no confirmations nothing is held, re-sent or overdue, and only
    the newest messages are kept."""
    kept = Unconfirmed()
    assert kept.keep(_fix(0), now_ms=0, connected=False)
    assert kept.take_for_resend(now_ms=1) == []
    assert not kept.overdue(now_ms=10**9, after_ms=1)
    for seq in range(1, KEPT_UNCONFIRMED_MAX + 5):
        kept.keep(_fix(seq), now_ms=seq, connected=True)
    assert len(kept) == KEPT_UNCONFIRMED_MAX
