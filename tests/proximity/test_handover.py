"""The hold between the intake and the engine during a live hand-over (`handover.Hold`)."""

from __future__ import annotations

from nabij.contract import Topics
from services.proximity.handover import Hold
from services.proximity.intake import Received

TOPICS = Topics("nabij/v1")


def message(device_id: str, mid: int) -> Received:
    return Received(TOPICS.device(device_id, "fix"), b"{}", mid, 1, 0, 1)


def test_arriving_devices_wait_left_ones_are_acknowledged_the_rest_flows() -> None:
    """Messages of devices being taken over are held unacknowledged and judged first after the
    adoption, in the order they came; those of devices handed away are acknowledged unjudged;
    every other device's go on at once."""
    acked: list[Received] = []
    hold = Hold(TOPICS, limit=10, arriving=frozenset({"ank-5"}), left=frozenset({"vic-9"}))
    first = [message("ank-5", 1), message("ank-1", 2), message("vic-9", 3), message("ank-5", 4)]
    assert hold.sort(first, acked.extend) == [first[1]]
    assert acked == [first[2]]
    assert hold.held == [first[0], first[3]] and not hold.idle
    hold.release()
    hold.left = frozenset()
    later = [message("ank-5", 5)]
    assert hold.sort(later, acked.extend) == [first[0], first[3], later[0]]
    assert hold.idle and acked == [first[2]]


def test_a_full_hold_stalls_only_once_the_shard_has_released() -> None:
    hold = Hold(TOPICS, limit=2, arriving=frozenset({"ank-5"}))
    hold.sort([message("ank-5", n) for n in range(3)], lambda _items: None)
    assert not hold.full  # other shards may wait for this one's lanes: it must not stall
    hold.may_stall = True
    assert hold.full
    hold.release()
    assert not hold.full and not hold.may_stall
