"""Broker credentials: the password-file format, its edits, and the ACL the config ships."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from nabij.contract import Topics
from services.access.broker_auth import (
    BrokerAuthError,
    device_username,
    hash_password,
    render_acl,
    service_username,
    with_user,
    without_user,
)

SHIPPED_ACL = Path(__file__).parents[1] / "config" / "mosquitto" / "acl"


def test_the_hash_is_mosquittos_pbkdf2_sha512_line() -> None:
    """`$7$iterations$salt$hash`, base64, PBKDF2-HMAC-SHA512 of the password (the real broker
    accepting it is proven by every secure integration test)."""
    salt = b"0123456789ab"
    _, seven, iterations, salt_b64, digest_b64 = hash_password("s3cret", salt).split("$")
    assert (seven, iterations) == ("7", "101")
    assert base64.b64decode(salt_b64) == salt
    expected = hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, 101)
    assert base64.b64decode(digest_b64) == expected


def test_adding_replaces_one_users_line_and_revoking_removes_only_it() -> None:
    """A user is in the file once; removing one user leaves the others untouched."""
    text = with_user(with_user("", "ank-1", "$7$a"), "ank-2", "$7$b")
    text = with_user(text, "ank-1", "$7$c")
    assert text.splitlines() == ["ank-2:$7$b", "ank-1:$7$c"]
    assert without_user(text, "ank-1") == ("ank-2:$7$b\n", True)
    assert without_user(text, "ank-3") == (text, False)


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "a" * 65, "nabij.proximity", "ank 1"])
def test_a_device_id_the_contract_refuses_cannot_be_provisioned(bad: str) -> None:
    """Ids with MQTT wildcards, slashes or a service's dot never become broker users."""
    with pytest.raises(BrokerAuthError):
        device_username(bad)


def test_services_are_known_names_outside_the_device_id_space() -> None:
    assert service_username("proximity") == "nabij.proximity"
    with pytest.raises(BrokerAuthError):
        service_username("observer")


def test_the_acl_topics_are_the_contracts_and_the_shipped_acl_is_current() -> None:
    """Device rights name exactly the contract's topics (a renamed topic must not leave devices
    mute), and config/mosquitto/acl is what `nabij device init` writes for the default prefix."""
    topics = Topics("p/v1")
    acl = render_acl("p/v1")
    for kind in ("fix", "event", "status"):
        assert f"pattern write {topics.device('%u', kind)}\n" in acl
    assert f"pattern read {topics.device('%u', 'cmd')}\n" in acl
    assert SHIPPED_ACL.read_text(encoding="utf-8") == render_acl("nabij/v1")
