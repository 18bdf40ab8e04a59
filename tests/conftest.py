"""Shared fixtures: real Mosquitto and Redis processes on free ports, clients, unique prefixes.

The servers (`mosquitto`, `redis_server`) belong to one test, which may stop, kill or restart
them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from tests.servers import (
    CAPPED_REDIS,
    MissingBinaryError,
    MosquittoServer,
    RedisClusterServers,
    RedisServer,
)

_S = TypeVar("_S", MosquittoServer, RedisServer, RedisClusterServers)


def _serving(factory: Callable[[], _S]) -> Iterator[_S]:
    """Start a server for one test and stop it afterwards, whatever the test did to it."""
    try:
        server = factory()
    except MissingBinaryError as err:
        pytest.fail(str(err), pytrace=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A fresh `mosquitto` owned by this test (persistence in its own tmp dir)."""
    yield from _serving(lambda: MosquittoServer(tmp_path / "mosquitto"))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh `redis-server` owned by this test (AOF, fsync always, in its own tmp dir)."""
    yield from _serving(lambda: RedisServer(tmp_path / "redis"))


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A fresh Redis Cluster of three masters owned by this test (see `RedisClusterServers`)."""
    yield from _serving(lambda: RedisClusterServers(tmp_path / "redis-cluster"))


@pytest.fixture
def capped_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh `redis-server` (AOF on) with `maxmemory 256mb` and `noeviction`: once full it
    refuses writes with OOM errors, as production Redis is configured to."""
    yield from _serving(lambda: RedisServer(tmp_path / "redis", extra_config=CAPPED_REDIS))


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A bytes client of this test's `redis_server`, database flushed."""
    client = redis_server.client()
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def unique_prefix(request: pytest.FixtureRequest) -> str:
    """A prefix unique to this test run, safe in MQTT topics and Redis keys: `name-<hex>`."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")[:40]
    return f"{name}-{uuid.uuid4().hex[:10]}"
