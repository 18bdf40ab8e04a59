from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.stack import ONE_PAIR, Stack, write_config

StackFactory = Callable[..., Stack]


@pytest.fixture
def make_stack(
    tmp_path: Path, mosquitto: object, redis_server: object, unique_prefix: str
) -> Iterator[StackFactory]:
    """Build a configured nabij against this test's own Mosquitto and Redis."""
    stacks: list[Stack] = []

    def build(orders_toml: str = ONE_PAIR, extra_toml: str = "") -> Stack:
        config_dir = write_config(
            tmp_path / f"config-{len(stacks)}",
            mqtt_url=mosquitto.url,  # type: ignore[attr-defined]  # fixture object from tests/servers.py
            redis_url=redis_server.url,  # type: ignore[attr-defined]  # fixture object from tests/servers.py
            prefix=unique_prefix,
            orders_toml=orders_toml,
            extra_toml=extra_toml,
        )
        stack = Stack(config_dir, mosquitto.url, redis_server.url)  # type: ignore[attr-defined]  # as above
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.stop()
