"""Exactly-once commits: a lost reply never makes a transaction apply twice."""

from __future__ import annotations

import threading

import redis
import structlog

from nabij.commit import Committer


class FlakyRedis:
    """Applies every transaction; loses the first reply; fails the first probes of the counter."""

    def __init__(self, failing_probes: int) -> None:
        self.data: dict[str, object] = {}
        self.stream: list[object] = []
        self.executes = 0
        self.failing_probes = failing_probes
        self.gets = 0

    def pipeline(self, transaction: bool = True) -> FlakyRedis:
        self.ops: list[tuple[str, str, object]] = []
        return self

    def xadd(self, key: str, fields: object) -> None:
        self.ops.append(("xadd", key, fields))

    def set(self, key: str, value: object) -> None:
        self.ops.append(("set", key, value))

    def execute(self) -> None:
        self.executes += 1
        for op, key, value in self.ops:
            if op == "xadd":
                self.stream.append(value)
            else:
                self.data[key] = value
        if self.executes == 1:
            raise redis.TimeoutError("reply lost")

    def get(self, key: str) -> object:
        self.gets += 1
        if self.gets > 1 and self.failing_probes > 0:  # the first get reads the counter
            self.failing_probes -= 1
            raise redis.ConnectionError("still down")
        return self.data.get(key)


def test_lost_reply_with_failing_probes_applies_once() -> None:
    """EXEC applied but its reply lost, then Redis unreachable for a while: the committer asks
    until it knows, sees the transaction landed, and does not send it again."""
    fake = FlakyRedis(failing_probes=3)
    committer = Committer(fake, "c", structlog.get_logger())  # type: ignore[arg-type]  # a stand-in for redis.Redis
    committer.commit(lambda pipe: pipe.xadd("police", {"notice": "N-1"}), threading.Event())
    assert fake.stream == [{"notice": "N-1"}]
    assert fake.executes == 1
    committer.commit(lambda pipe: pipe.xadd("police", {"notice": "N-2"}), threading.Event())
    assert fake.stream == [{"notice": "N-1"}, {"notice": "N-2"}]
    assert fake.data["c"] == 2
