from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.stack import ONE_PAIR, Stack, write_config
from tests.servers import MosquittoServer, RedisServer

StackFactory = Callable[..., Stack]


@pytest.fixture
def make_stack(
    tmp_path: Path, mosquitto: MosquittoServer, redis_server: RedisServer, unique_prefix: str
) -> Iterator[StackFactory]:
    """Build a configured nabij against this test's own Mosquitto and Redis; the services and
    every device connect to the broker under their own identities (the shipped ACL applies)."""
    stacks: list[Stack] = []

    def build(orders_toml: str = ONE_PAIR, extra_toml: str = "") -> Stack:
        config_dir = write_config(
            tmp_path / f"config-{len(stacks)}",
            mqtt_url=mosquitto.open_url,
            redis_url=redis_server.url,
            prefix=unique_prefix,
            orders_toml=orders_toml,
            extra_toml=extra_toml,
            mqtt_toml=mosquitto.service_identity_toml("proximity"),
        )
        stack = Stack(config_dir, mosquitto.url, redis_server.url, device_url=mosquitto.url_for)
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.stop()
