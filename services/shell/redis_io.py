"""Redis plumbing shared by services: client construction, start-up wait, dead letters, and
noticing that Redis refuses writes for lack of memory.

Clients return bytes (`decode_responses=False`): stream fields and msgpack state are bytes, and
decoding is the caller's choice at the boundary.

Retries: a command that fails with a connection error or timeout is sent again, with exponential
backoff, up to `retries` times. For a `MULTI`/`EXEC` whose reply was lost on the way back, the
retry applies the transaction a second time. A shell that relies on "not acked, therefore not
committed" passes `retries=0` for its commit client and lets the error reach its recovery path.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import hiredis
import redis
import structlog
from redis._parsers import Encoder
from redis.backoff import ExponentialBackoff
from redis.client import Pipeline
from redis.connection import HiredisRespSerializer, PythonRespSerializer
from redis.retry import Retry
from redis.typing import EncodableT, FieldT

from nabij.config import SETTINGS_FILE, ConfigError, ConfigProblem
from nabij.keys import Keys
from nabij.settings import (
    DEADLETTER_DETAIL_MAX_BYTES,
    DEADLETTER_TOPIC_MAX_BYTES,
    RedisRole,
    RedisSettings,
    RedisUser,
)
from services.shell import metrics
from services.shell.logs import LogAggregator

DEFAULT_SOCKET_TIMEOUT_S: Final = 10.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
DEFAULT_HEALTH_CHECK_INTERVAL_S: Final = 15
DEFAULT_RETRIES: Final = 5
# Redis away or restarting: wait and try again (a full Redis is told apart: `is_out_of_memory`).
TRANSIENT_REDIS_ERRORS: Final = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
# ...or full: a plain write refused for lack of memory (`noeviction`).
AWAY_OR_FULL_ERRORS: Final = (*TRANSIENT_REDIS_ERRORS, redis.exceptions.OutOfMemoryError)
# XREADGROUP/XREAD BLOCK must stay below the socket timeout, or the read times out first.
MAX_BLOCK_MS: Final = int(DEFAULT_SOCKET_TIMEOUT_S * 1000 / 2)


_BUFFER_CUTOFF: Final = 6000
"""redis-py's own (`Connection._buffer_cutoff`), for its pure-Python packer behind ours."""
_PLAIN: Final = frozenset({bytes, str, int})
"""Argument types that redis-py's packer turns into exactly what hiredis makes of them (UTF-8,
decimal; the same errors too); a float, a bool or a memoryview takes redis-py's path (pinned
by `tests/test_redis_io.py`)."""
PACK_SLICE: Final = 256
"""Arguments hiredis packs at a time. A commit's `MSET` of a batch's states has ~3,000, and one
`pack_command` of them all cost hiredis ~1.5 us per state and key pair, twice what slices of 256
cost (0.6-0.7 us, joined after; docs/benchmarks.md): its buffer grows past the caches."""


class LeanPacker:
    """redis-py's hiredis packer without its Python calls per argument when every argument is
    plain. A state commit sends a few thousand arguments a batch (the `MSET` of every changed
    state, the `SADD` of their devices), and redis-py spent ~1 us on each, as much as a tenth of
    a fix's CPU (docs/benchmarks.md, issue 14). Anything else is packed by redis-py."""

    def __init__(self) -> None:
        # What a redis-py connection builds for itself: its encoding (utf-8, strict, bytes back).
        encode = Encoder("utf-8", "strict", False).encode  # type: ignore[no-untyped-call]  # untyped in redis-py
        fallback = PythonRespSerializer(_BUFFER_CUTOFF, encode)
        self._general = HiredisRespSerializer(fallback.pack, encode)  # type: ignore[no-untyped-call]  # as above

    def pack(self, *args: Any) -> list[bytes]:  # redis-py's packer signature
        command = args[0]
        if type(command) is str and " " not in command and set(map(type, args)) <= _PLAIN:
            if len(args) <= PACK_SLICE:
                return [hiredis.pack_command(args)]
            # The same bytes: one header counting every argument, each slice's own cut off.
            pieces: list[bytes | memoryview] = [b"*%d\r\n" % len(args)]
            for start in range(0, len(args), PACK_SLICE):
                part = hiredis.pack_command(args[start : start + PACK_SLICE])
                pieces.append(memoryview(part)[part.index(b"\r\n") + 2 :])
            return [b"".join(pieces)]
        packed: list[bytes] = self._general.pack(*args)
        return packed


def connect(
    url: str,
    *,
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    health_check_interval_s: int = DEFAULT_HEALTH_CHECK_INTERVAL_S,
    retries: int = DEFAULT_RETRIES,
    client_name: str | None = None,
    username: str | None = None,
    password: str | None = None,
    cluster: bool = False,
) -> redis.Redis:
    """A sync client for `url` (`redis://[user:pass@]host:port/db` or `rediss://`); lazy, no I/O
    yet. `username` and `password` apply when the URL carries none.

    Connection errors and timeouts are retried `retries` times with exponential backoff
    (8 ms doubling, capped at 1 s); a connection idle for `health_check_interval_s` is pinged
    before use, so a restarted server is noticed at the next command instead of failing it.

    `cluster`: a Redis Cluster client, `url` naming any node (it learns the others and follows
    MOVED replies). Typed as `redis.Redis`: nabij calls only commands both clients have, each
    on one slot or in a non-transactional pipeline (which the cluster client splits by node).
    """
    if cluster:
        return cast(
            redis.Redis,
            redis.RedisCluster.from_url(
                url,
                decode_responses=False,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=connect_timeout_s,
                socket_keepalive=True,
                retry=Retry(ExponentialBackoff(cap=1.0, base=0.008), retries),
                client_name=client_name,
                username=username,
                password=password,
            ),
        )
    return redis.Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        socket_keepalive=True,
        health_check_interval=health_check_interval_s,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.008), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        client_name=client_name,
        username=username,
        password=password,
        # One packer for the pool's connections (it holds no state). The cluster client does
        # not take the option and packs as redis-py does.
        command_packer=LeanPacker(),
    )


def connect_as(
    settings: RedisSettings,
    role: RedisRole,
    *,
    env: Mapping[str, str] | None = None,
    retries: int = DEFAULT_RETRIES,
) -> redis.Redis:
    """A client for `role`: as its own ACL user when `settings.users` names one, else with the
    plain URL (development)."""
    user = settings.users.get(role)
    if user is None:
        return connect(settings.url, retries=retries, cluster=settings.cluster)
    password = read_password(role, user, os.environ if env is None else env)
    return connect(
        settings.url,
        retries=retries,
        username=user.username,
        password=password,
        cluster=settings.cluster,
    )


def read_password(role: RedisRole, user: RedisUser, env: Mapping[str, str]) -> str:
    """The password of `role`'s user, from its file or environment variable (one trailing newline
    of a file is not part of it). Raises `ConfigError` naming the setting when it is missing."""
    setting = f"redis.users.{role}"
    if user.password_env is not None:
        password = env.get(user.password_env)
        if password:
            return password
        problem = f"environment variable {user.password_env} is not set"
        setting += ".password_env"
    else:
        assert user.password_file is not None  # the settings hold exactly one source
        try:
            return user.password_file.read_text(encoding="utf-8").removesuffix("\n")
        except OSError as err:
            problem = f"cannot read {user.password_file}: {err.strerror}"
            setting += ".password_file"
    raise ConfigError([ConfigProblem(SETTINGS_FILE, setting, None, problem)])


def wait_until_ready(client: redis.Redis, timeout_s: float, *, interval_s: float = 0.05) -> None:
    """Return once `client` answers PING (server up and done loading); else raise TimeoutError.

    A server still loading its AOF answers `LOADING`, which counts as not ready yet.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            if client.ping():
                return
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as err:
            last_error = err
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"Redis not ready after {timeout_s:.1f} s: {last_error!r}"
            ) from last_error
        time.sleep(interval_s)


# --- dead letters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected input, kept with the reason, as an entry of the `keys.deadletter` stream.

    `source` is the service that rejected it, `reason` a short machine word (the same word as the
    `nabij_messages_rejected_total{reason}` label), `detail` a human sentence, `topic` where it
    came from (MQTT topic or stream key), `payload` the bytes as received, or their first
    `deadletter_payload_bytes` when longer; `size` is the length of the whole payload and `sha256`
    its hex digest, so a truncated letter still identifies what was sent.
    """

    source: str
    reason: str
    detail: str
    topic: str
    payload: bytes
    size: int
    sha256: str
    received_ms: int

    @classmethod
    def bounded(
        cls,
        *,
        source: str,
        reason: str,
        detail: str,
        topic: str,
        payload: bytes,
        received_ms: int,
        payload_bytes: int,
    ) -> DeadLetter:
        """A letter with every field cut to its bound (`RedisSettings.deadletter_entries`)."""
        return cls(
            source=source,
            reason=reason,
            detail=_cut(detail, DEADLETTER_DETAIL_MAX_BYTES),
            topic=_cut(topic, DEADLETTER_TOPIC_MAX_BYTES),
            payload=payload[:payload_bytes],
            size=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
            received_ms=received_ms,
        )

    @property
    def truncated(self) -> bool:
        return len(self.payload) < self.size

    def to_fields(self) -> dict[FieldT, EncodableT]:
        return {
            "source": self.source,
            "reason": self.reason,
            "detail": self.detail,
            "topic": self.topic,
            "payload": self.payload,
            "size": str(self.size),
            "sha256": self.sha256,
            "received_ms": str(self.received_ms),
        }

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> DeadLetter:
        """Read back a stream entry's fields (as a bytes client returns them).

        Letters written before `size` and `sha256` existed held the whole payload: both are
        derived from it.
        """
        payload = fields[b"payload"]
        return cls(
            source=fields[b"source"].decode(),
            reason=fields[b"reason"].decode(),
            detail=fields[b"detail"].decode(),
            topic=fields[b"topic"].decode(),
            payload=payload,
            size=int(fields.get(b"size", len(payload))),
            sha256=fields.get(b"sha256", b"").decode() or hashlib.sha256(payload).hexdigest(),
            received_ms=int(fields[b"received_ms"]),
        )


def _cut(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, never inside a character."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode(errors="ignore")


def add_deadletter(pipe: Pipeline, keys: Keys, maxlen: int, letter: DeadLetter) -> None:
    """Queue an XADD of one dead letter on `pipe`, capping the stream at ~`maxlen` entries.

    The trim is approximate (`MAXLEN ~`): Redis trims whole radix-tree nodes, which is cheap; the
    stream may hold somewhat more than `maxlen` entries, never fewer once that many arrived.
    """
    pipe.xadd(keys.deadletter, letter.to_fields(), maxlen=maxlen, approximate=True)


# --- Redis out of memory -----------------------------------------------------------------------


def is_out_of_memory(err: redis.RedisError) -> bool:
    """Whether Redis refused a write for lack of memory (`maxmemory` reached, `noeviction`).

    A refused command inside `MULTI` surfaces as `OutOfMemoryError`; a refused `EXEC` (memory
    ran out between queueing and EXEC) as `ExecAbortError` quoting the OOM. Either way Redis
    discarded the whole transaction.
    """
    if isinstance(err, redis.exceptions.OutOfMemoryError):
        return True
    return isinstance(err, redis.exceptions.ExecAbortError) and "maxmemory" in str(err)


class MemoryWatch:
    """Whether Redis takes this service's writes, as the latest write found.

    The service loop reports each write's outcome (`refused`, `accepted`); the `/readyz` check
    (`ok`, on the HTTP thread) and the `nabij_redis_out_of_memory` gauge show it. Each refusal is
    counted in `nabij_redis_oom_refusals_total{write}`; the log gets one line when Redis starts
    refusing and one when it takes writes again, not one per refusal.
    """

    def __init__(
        self,
        service: str,
        log: structlog.typing.FilteringBoundLogger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._service = service
        self._log = log
        self._clock = clock
        self._refusing = threading.Event()
        self._since = 0.0
        self._refusals = 0
        metrics.REDIS_OUT_OF_MEMORY.labels(service=service).set(0)

    def ok(self) -> bool:
        """False while Redis refuses writes for lack of memory."""
        return not self._refusing.is_set()

    def refused(self, write: str, err: redis.RedisError) -> None:
        metrics.REDIS_OOM_REFUSALS.labels(service=self._service, write=write).inc()
        self._refusals += 1
        if self._refusing.is_set():
            return
        self._refusing.set()
        self._since = self._clock()
        metrics.REDIS_OUT_OF_MEMORY.labels(service=self._service).set(1)
        self._log.error(
            "redis_out_of_memory",
            write=write,
            error=str(err),
            effect="input is held unacknowledged and retried; dead letters are dropped",
        )

    def accepted(self) -> None:
        if not self._refusing.is_set():
            return
        self._refusing.clear()
        metrics.REDIS_OUT_OF_MEMORY.labels(service=self._service).set(0)
        self._log.warning(
            "redis_memory_recovered",
            refusals=self._refusals,
            refusing_for_s=round(self._clock() - self._since, 1),
        )
        self._refusals = 0


# --- writing dead letters ----------------------------------------------------------------------


class DeadLetterWriter:
    """Stores dead letters best-effort, in a write of their own after the commit of real effects.

    A dead letter must never stand between a signal and Redis: the services commit state, signals
    and notices first, then hand their letters here. All letters of a batch go in one pipelined
    round trip (no transaction: each XADD lands or fails alone). A letter Redis refuses (out of
    memory) or cannot take (connection lost) is dropped: counted in
    `nabij_deadletters_dropped_total{reason}`, logged in aggregate, and its input is still
    acknowledged, so junk cannot come back after a restart to refuse again.

    Each letter is bounded (`RedisSettings.deadletter_payload_bytes` of payload, fixed caps on the
    rest) and the stream is capped at `RedisSettings.deadletter_entries`, so the stream stays
    within `deadletter_budget_bytes` whatever arrives.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        settings: RedisSettings,
        *,
        service: str,
        memory: MemoryWatch,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._client = client
        self._keys = keys
        self._maxlen = settings.deadletter_entries
        self._service = service
        self._memory = memory
        self._dropped = LogAggregator(log, "deadletters_dropped")

    def write(self, letters: Sequence[DeadLetter]) -> None:
        """Store `letters` if Redis takes them; never raises for a Redis error."""
        if not letters:
            return
        pipe = self._client.pipeline(transaction=False)
        for letter in letters:
            add_deadletter(pipe, self._keys, self._maxlen, letter)
        try:
            results = pipe.execute(raise_on_error=False)
        except redis.RedisError as err:
            self._drop("redis_unavailable", len(letters), err)
            return
        failures = [r for r in results if isinstance(r, Exception)]
        refused = [e for e in failures if isinstance(e, redis.RedisError) and is_out_of_memory(e)]
        if refused:
            self._memory.refused("deadletter", refused[0])
            self._drop("redis_oom", len(refused), refused[0])
        elif len(failures) < len(results):
            self._memory.accepted()
        if len(failures) > len(refused):
            self._drop("redis_error", len(failures) - len(refused), failures[0])

    def flush_logs(self) -> None:
        """Write due summaries of dropped letters (call on every turn of the service loop)."""
        self._dropped.flush()

    def _drop(self, reason: str, count: int, err: BaseException) -> None:
        metrics.DEADLETTERS_DROPPED.labels(service=self._service, reason=reason).inc(count)
        self._dropped.record(reason, letters=count, error=str(err))


def answers(client: redis.Redis) -> bool:
    """Whether Redis answers a PING now (a readiness check)."""
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


__all__ = [
    "MAX_BLOCK_MS",
    "DeadLetter",
    "DeadLetterWriter",
    "MemoryWatch",
    "add_deadletter",
    "answers",
    "connect",
    "connect_as",
    "is_out_of_memory",
    "read_password",
    "wait_until_ready",
]
