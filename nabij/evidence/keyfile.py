"""The Ed25519 signing key of the evidence trail, from a file (PKCS#8 PEM, mode 0600).

`make` creates it without ever replacing one: two services starting at once (`nabij run`) end
with the same key, and an existing key is never overwritten (that would orphan every signature).
The public key goes beside it as `KEY.pub`, for bundles and for a court to compare out of band.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from nabij.failures import NabijError


class KeyFileError(NabijError):
    """The key file cannot be read, or holds no Ed25519 private key."""


def public_path(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + ".pub")


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def make(key_file: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key in `key_file`, made first if the file does not exist; (key, made now)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    key_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load(key_file), False
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public_path(key_file).write_bytes(public_pem(key.public_key()))
    return key, True


def load(key_file: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError) as err:
        raise KeyFileError(f"cannot read the audit key {key_file}: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{key_file} holds no Ed25519 private key")
    return key


def load_public(pem: bytes) -> Ed25519PublicKey:
    try:
        key = load_pem_public_key(pem)
    except ValueError as err:
        raise KeyFileError(f"not a public key: {err}") from err
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError("not an Ed25519 public key")
    return key
