"""The Redis ACL rules come from `Keys`: every key has its users, and only the right ones write."""

from __future__ import annotations

import inspect
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from nabij.keys import Keys, Shard, ShardKeys, UnshardedKeys
from nabij.settings import REDIS_ROLES, RedisRole, Settings
from services.access.redis_acl import ANY, Grant, acl_file, default_username, glob_escape, grants

PREFIX = "nabij"
KEYS = Keys(PREFIX)
# Names on `Keys` that are not keys (one shard's keys: those of `every_proximity_shard`).
NOT_KEYS = {"prefix", "gateway_group", "proximity", "tag"}


def _every_key(keys: object = KEYS, within: str = "") -> dict[str, str]:
    """Each key `Keys` names, as a pattern (method arguments as `*`), a shard's keys included."""
    found: dict[str, str] = {}
    for name, member in inspect.getmembers(type(keys)):
        if name.startswith("_") or name in NOT_KEYS:
            continue
        if isinstance(member, property):
            key = getattr(keys, name)
        else:
            arity = len(inspect.signature(member).parameters) - 1
            key = getattr(keys, name)(*[ANY] * arity)
        if isinstance(key, ShardKeys | UnshardedKeys):
            found |= _every_key(key, f"{name}.")
        else:
            found[within + name] = key
    return found


def _covering(pattern: str) -> dict[RedisRole, list[Grant]]:
    return {
        role: [g for g in role_grants if any(_matches(p, pattern) for p in g.patterns)]
        for role, role_grants in grants(PREFIX).items()
    }


def _matches(grant_pattern: str, key_pattern: str) -> bool:
    """Whether a grant covers a key, or a member of a key family (`health:*` by `health:gateway`,
    `dispatch:*` by `dispatch:police`)."""
    return fnmatchcase(key_pattern, grant_pattern) or fnmatchcase(grant_pattern, key_pattern)


@pytest.mark.parametrize(("name", "pattern"), sorted(_every_key().items()))
def test_every_key_is_granted_to_someone(name: str, pattern: str) -> None:
    """A key added to `Keys` without a grant fails here (and would fail with NOPERM live)."""
    assert any(_covering(pattern).values()), f"{name} ({pattern}) is granted to no user"


def _writers(key: str) -> set[RedisRole]:
    return {
        role
        for role, covering in _covering(key).items()
        if any(grant.access != "R" for grant in covering)
    }


def _readers(key: str) -> set[RedisRole]:
    return {
        role
        for role, covering in _covering(key).items()
        if any(grant.access != "W" for grant in covering)
    }


def test_who_writes_and_reads_what() -> None:
    """Only the gateway writes alarm records and police facts; only humans' tools append
    requests; only the proximity service feeds the signal inbox; the probation role reads
    neither the police queue nor the victim's facts."""
    humans: set[RedisRole] = {"probation", "police", "console"}
    assert _writers(KEYS.alarms) == {"gateway"}
    assert _writers(KEYS.police_facts) == {"gateway"}
    assert _writers(KEYS.human_requests) == humans | {"gateway"}  # gateway: XACK/XDEL
    assert _writers(KEYS.proximity(Shard(1, 2)).gateway_inbox) == {"proximity", "gateway"}
    assert _readers(KEYS.police_facts) == {"gateway", "police", "console"}
    assert _readers(KEYS.dispatch("police")) == {"gateway", "police", "console"}
    assert "probation" in _readers(KEYS.dispatch("probation"))
    appenders = {
        role
        for role, covering in _covering(KEYS.human_requests).items()
        if any("xadd" in grant.commands for grant in covering)
    }
    assert appenders == humans


def test_a_prefix_with_glob_characters_is_matched_literally() -> None:
    """`*`, `?`, `[` in the prefix cannot widen a user's keys."""
    assert glob_escape("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"
    rendered = grants("n*")["probation"][0].render()
    assert "~n\\*:gateway:alarms" in rendered


def test_the_file_switches_off_the_default_user_and_users_without_a_password() -> None:
    """No anonymous access; a role without a configured password is listed but off."""
    users = {role: (f"nabij-{role}", "ab" * 32) for role in REDIS_ROLES}
    users["console"] = ("nabij-console", None)
    lines = acl_file(PREFIX, users).splitlines()
    assert lines[0] == "user default off resetchannels -@all"
    by_user = {line.split()[1]: line for line in lines}
    assert f"on #{'ab' * 32}" in by_user["nabij-gateway"]
    assert " off " in by_user["nabij-console"]
    assert all(line.startswith("user ") for line in lines)  # ACL files take no comments


def test_the_shipped_example_is_what_the_generator_writes() -> None:
    """config/redis/users.acl.example is `nabij redis-acl` for the default config (every user
    off until it has a password); regenerate it when the grants change."""
    example = Path(__file__).resolve().parent.parent / "config" / "redis" / "users.acl.example"
    users = {role: (default_username(role), None) for role in REDIS_ROLES}
    assert example.read_text(encoding="utf-8") == acl_file(PREFIX, users)


def test_the_example_users_load_as_settings() -> None:
    """The example `[redis.users.*]` sections are valid settings for every role."""
    example = Path(__file__).resolve().parent.parent / "config" / "redis" / "users.toml.example"
    settings = Settings.model_validate(tomllib.loads(example.read_text(encoding="utf-8")))
    assert set(settings.redis.users) == set(REDIS_ROLES)
