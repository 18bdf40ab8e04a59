"""Operators and sessions, kept in Redis: one identity model for `nabij operator` and the console.

Passwords are stored as argon2id hashes (argon2-cffi: the OWASP first choice, memory-hard). A
session is stored under the SHA-256 of its cookie, so neither a key listing nor a dump of Redis
yields a cookie that logs anyone in.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Callable
from typing import Final

import msgspec
import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from nabij.contract import OperatorName
from nabij.failures import NabijError
from nabij.keys import Keys
from services.console.core import Role, Session, session_valid


class IdentityError(NabijError):
    """An operator cannot be added as asked; the message says why."""


class StoredOperator(msgspec.Struct, frozen=True):
    role: Role
    password_hash: str


_operator_decoder: Final = msgspec.json.Decoder(StoredOperator)
_session_decoder: Final = msgspec.json.Decoder(Session)
_hasher: Final = PasswordHasher()


@functools.cache
def _decoy_hash() -> str:
    """Verified against when the name is unknown: a wrong name costs what a wrong password does."""
    return _hasher.hash(secrets.token_hex(16))


MIN_PASSWORD_LENGTH: Final = 12


def checked_name(name: str) -> str:
    try:
        return msgspec.convert(name, OperatorName)
    except msgspec.ValidationError as err:
        raise IdentityError(
            "an operator name is 1-128 characters, not blank, with no control characters"
        ) from err


class Operators:
    """Who may log in, with which role."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._key = keys.operators

    def add(self, name: str, role: Role, password: str) -> None:
        """Create or replace operator `name` (a new password or role replaces the old)."""
        if len(password) < MIN_PASSWORD_LENGTH:
            raise IdentityError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
        stored = StoredOperator(role, _hasher.hash(password))
        self._client.hset(self._key, checked_name(name), msgspec.json.encode(stored))

    def remove(self, name: str) -> bool:
        return bool(self._client.hdel(self._key, name))

    def _stored(self, name: str) -> StoredOperator | None:
        blob = self._client.hget(self._key, name) if len(name) <= 128 else None
        return None if blob is None else _operator_decoder.decode(blob)

    def role(self, name: str) -> Role | None:
        """The operator's role now (None: removed)."""
        stored = self._stored(name)
        return None if stored is None else stored.role

    def verify(self, name: str, password: str) -> Role | None:
        """The operator's role if `password` is theirs, else None."""
        stored = self._stored(name)
        try:
            _hasher.verify(_decoy_hash() if stored is None else stored.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        return None if stored is None else stored.role


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Sessions:
    """Sessions valid for `ttl_ms` on `clock`; Redis forgets them a while after (garbage only)."""

    def __init__(
        self, client: redis.Redis, keys: Keys, ttl_ms: int, clock: Callable[[], int]
    ) -> None:
        self._client = client
        self._keys = keys
        self._ttl_ms = ttl_ms
        self._clock = clock

    def open(self, name: str, role: Role) -> tuple[str, Session]:
        """A new session: (cookie token, session)."""
        token = secrets.token_urlsafe(32)
        session = Session(name, role, secrets.token_urlsafe(32), self._clock() + self._ttl_ms)
        self._client.set(
            self._keys.console_session(token_hash(token)),
            msgspec.json.encode(session),
            px=self._ttl_ms,
        )
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The session of `token` if it exists and has not expired."""
        if not token or len(token) > 128:
            return None
        blob = self._client.get(self._keys.console_session(token_hash(token)))
        if blob is None:
            return None
        session = _session_decoder.decode(blob)
        return session if session_valid(session, self._clock()) else None

    def close(self, token: str) -> None:
        self._client.delete(self._keys.console_session(token_hash(token)))
