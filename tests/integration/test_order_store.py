"""`nabij orders` against a real Redis: one version per apply, compare-and-set, nothing written
by an invalid file or a dry run."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest
import redis

from nabij import order_store
from nabij.keys import Keys
from nabij.order_store import StaleVersionError
from services.cli import main
from tests.integration.redis_cut import CutAt, RedisCut
from tests.integration.stack import write_config
from tests.proximity import order
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

ORDER = """
[[order]]
id = "ORD-S-1"
offender_device = "ank-1"
victim_devices = ["vic-1"]
alarm_m = {alarm_m}
"""


@pytest.fixture
def config_dir(tmp_path: Path, redis_server: RedisServer, unique_prefix: str) -> Path:
    return write_config(
        tmp_path / "config",
        mqtt_url="mqtt://127.0.0.1:1",  # never connected: `nabij orders` talks to Redis only
        redis_url=redis_server.url,
        prefix=unique_prefix,
        orders_toml=ORDER.format(alarm_m=500),
    )


def orders(config_dir: Path, *args: str) -> int:
    return main(["orders", *args, "--config", str(config_dir)])


def test_dry_run_prints_the_diff_and_an_invalid_file_changes_nothing(
    config_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    author = ["--by", "ops-1", "--reason", "enrolment"]
    assert orders(config_dir, "apply", str(config_dir), *author) == 0
    assert "applied as version 1" in capsys.readouterr().out
    wider = tmp_path / "wider.toml"
    wider.write_text(ORDER.format(alarm_m=800), encoding="utf-8")
    assert orders(config_dir, "apply", str(wider), "--dry-run", *author) == 0
    out = capsys.readouterr().out
    assert "~ order ORD-S-1 changed" in out and "alarm_m: - 500.0" in out
    assert "alarm_m: + 800.0" in out and "nothing applied" in out
    broken = tmp_path / "broken.toml"
    broken.write_text(ORDER.format(alarm_m=-1) + 'colour = "red"\n', encoding="utf-8")
    assert orders(config_dir, "apply", str(broken), *author) == 2
    err = capsys.readouterr().err
    assert "broken.toml:6: order[0].alarm_m" in err and "order[0].colour: unknown key" in err
    assert orders(config_dir, "list") == 0
    listing = capsys.readouterr().out
    assert listing.startswith("version 1 by ops-1") and "alarm 500 m" in listing


def test_two_operators_applying_at_once_one_wins_the_other_is_told_to_re_read(
    redis_server: RedisServer, unique_prefix: str
) -> None:
    client, keys = redis.Redis.from_url(redis_server.url), Keys(unique_prefix)
    order_store.bootstrap(client, keys, [order(alarm_m=500)], now_ms=1)
    seen = order_store.read_version(client, keys)
    assert seen is not None and seen.version == 1
    mine, theirs = (
        order_store.next_version(
            [order(alarm_m=alarm_m)], expected=seen.version, by=by, reason="r", now_ms=2
        )
        for by, alarm_m in (("a", 600), ("b", 700))
    )
    order_store.apply(client, keys, mine)
    with pytest.raises(StaleVersionError, match="you read version 1, now 2"):
        order_store.apply(client, keys, theirs)
    history = order_store.history(client, keys)
    assert [(v.version, v.by, v.orders[0].alarm_m) for v in history] == [
        (1, "nabij", 500),
        (2, "a", 600),
    ]
    assert order_store.landed(client, keys, mine) and not order_store.landed(client, keys, theirs)


def test_show_a_past_version_and_end(
    config_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    author = ["--by", "ops-2", "--reason", "ring widened"]
    assert orders(config_dir, "apply", str(config_dir), *author) == 0
    wider = tmp_path / "wider.toml"
    wider.write_text(ORDER.format(alarm_m=800), encoding="utf-8")
    assert orders(config_dir, "apply", str(wider), *author) == 0
    assert orders(config_dir, "end", "ORD-S-1", "--by", "judge", "--reason", "lifted") == 0
    capsys.readouterr()
    assert orders(config_dir, "show", "ORD-S-1", "--version", "1") == 0
    assert '"alarm_m": 500.0' in capsys.readouterr().out
    assert orders(config_dir, "show", "ORD-S-1") == 2
    assert orders(config_dir, "end", "ORD-S-1", "--by", "judge", "--reason", "again") == 2
    capsys.readouterr()
    assert orders(config_dir, "history", "ORD-S-1") == 0
    kinds = [line.split()[2] for line in capsys.readouterr().out.splitlines()]
    assert kinds == ["added", "changed", "ended"]


CUTS: Final[dict[str, tuple[CutAt, bool, int, str]]] = {
    "reply lost": ("after_exec", False, 0, "applied as version 2"),
    "exec lost": ("before_exec", False, 1, "not applied: Redis was unreachable"),
    "redis stays away": ("before_exec", True, 3, "unknown whether version 2 was applied"),
}


@pytest.mark.parametrize("case", CUTS)
def test_an_apply_while_redis_is_unreachable_lands_whole_or_not_at_all_and_says_which(
    redis_server: RedisServer,
    unique_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    """The connection to a real Redis breaks around the transaction's EXEC: after it ran (its
    reply lost), just before it (nothing ran), or before it with Redis staying away. The command
    says which (exit code and message), and the store holds the whole version or none of it."""
    cut_at, stay_down, exit_code, said = CUTS[case]
    client, keys = redis.Redis.from_url(redis_server.url), Keys(unique_prefix)
    order_store.bootstrap(client, keys, [order("ORD-S-1", alarm_m=500)], now_ms=1)
    cut = RedisCut(redis_server.port, cut_at, stay_down=stay_down)
    try:
        config = write_config(
            tmp_path / "config",
            mqtt_url="mqtt://127.0.0.1:1",
            redis_url=cut.url,
            prefix=unique_prefix,
            orders_toml=ORDER.format(alarm_m=800),
        )
        author = ["--by", "ops-3", "--reason", "ring widened"]
        assert orders(config, "apply", str(config), *author) == exit_code
    finally:
        cut.close()
    assert cut.cut.is_set()  # the fault did happen where the test put it
    output = capsys.readouterr()
    assert said in output.out + output.err
    landed = exit_code == 0
    current = order_store.read_version(client, keys)
    assert current is not None
    assert (current.version, current.orders[0].alarm_m) == ((2, 800) if landed else (1, 500))
    assert len(order_store.history(client, keys)) == current.version
