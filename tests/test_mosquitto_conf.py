"""The shipped Mosquitto settings: every valid message fits, far larger junk does not, nobody is
anonymous, and every file they name is one `nabij device init` writes."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from nabij.contract import MAX_BACKLOG_FIXES, Fix
from services.cli import main

CONF = Path(__file__).parents[1] / "config" / "mosquitto" / "nabij.conf"


def _message_size_limit() -> int:
    match = re.search(r"^message_size_limit (\d+)$", CONF.read_text(encoding="utf-8"), re.M)
    assert match is not None, "config/mosquitto/nabij.conf sets no message_size_limit"
    return int(match.group(1))


def test_the_largest_valid_backlog_fits_with_margin() -> None:
    """A backlog of the most fixes the contract allows, every field at its longest, passes the
    broker's message_size_limit with at least 25% to spare; the limit is still far below the
    1 MB junk that once filled Redis."""
    longest = Fix(
        "d" * 64,
        2**63 - 1,
        4_102_444_800_000,
        -89.123456789012345,
        -179.12345678901234,
        99_999.12345678901,
        src="wifi",
        boot="b" * 64,
        speed=349.12345678901234,
        heading=359.12345678901234,
        batt=100,
    )
    worst = len(msgspec.json.encode([longest] * MAX_BACKLOG_FIXES))
    limit = _message_size_limit()
    assert worst * 1.25 <= limit < 1_000_000


def test_nobody_is_anonymous_and_every_file_the_config_names_is_one_nabij_device_init_writes(
    tmp_path: Path,
) -> None:
    """The shipped config refuses anonymous clients on every listener, and Mosquitto (which will
    not start with a missing file) finds each file it names once `nabij device init` has run."""
    text = CONF.read_text(encoding="utf-8")
    assert re.search(r"^allow_anonymous false$", text, re.M)
    assert re.search(r"^per_listener_settings false$", text, re.M)
    named = set(re.findall(r"^\w+ (/etc/mosquitto/nabij/\S+)$", text, re.M))
    assert {"password_file", "acl_file", "crlfile"} <= set(re.findall(r"^(\w+) /etc/", text, re.M))
    broker = tmp_path / "broker"
    code = main(
        ["device", "init", "--broker-dir", str(broker), "--ca-cert", str(tmp_path / "ca.crt"),
         "--ca-key", str(tmp_path / "ca.key")]
    )  # fmt: skip
    assert code == 0
    for path in named:
        assert (broker / Path(path).name).is_file(), path
