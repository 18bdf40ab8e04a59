"""`nabij device init|add|revoke`: who may talk to the broker, kept in its broker directory.

Files only (the formats are `services.access.broker_auth`'s): the broker reads them on start and
on SIGHUP.
A secret is generated here and written to a file of mode 0600 for the device or service; it is
never printed, never an argument, and only its hash reaches the broker directory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import signal
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from services.access import broker_auth as auth

PASSWD, ACL, CA_CERT, CRL, SERVER_CERT, SERVER_KEY = (
    "passwd", "acl", "ca.crt", "crl.pem", "server.crt", "server.key",
)  # fmt: skip
ISSUED = "certs"
SECRET_MODE = 0o600
BROKER_FILE_MODE = 0o640
"""Readable by the broker's group (chgrp the directory to `mosquitto`), by nobody else."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("device", help="provision or revoke broker credentials")
    actions = group.add_subparsers(dest="device_action", required=True, metavar="ACTION")

    init = actions.add_parser("init", help="write the ACL, server certificate and empty CRL")
    _broker_dir(init)
    _ca(init, required=True)
    init.add_argument("--topic-prefix", default="nabij/v1", help="[mqtt] topic_prefix")
    init.add_argument("--server-name", default="localhost", help="broker host name or address")
    init.set_defaults(handler=_init)

    add = actions.add_parser("add", help="new credentials for a device (or --service)")
    _identity(add)
    add.add_argument("--secrets", type=Path, required=True, help="where to write the secrets")
    add.add_argument("--cert", action="store_true", help="also a client certificate (CN = id)")
    _ca(add, required=False)
    add.set_defaults(handler=_add)

    revoke = actions.add_parser("revoke", help="remove a device's password and certificate")
    _identity(revoke)
    _ca(revoke, required=False)
    revoke.add_argument("--pid-file", type=Path, help="the broker's pid file: SIGHUP it")
    revoke.set_defaults(handler=_revoke)


def _broker_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker-dir", type=Path, required=True, help="what nabij.conf points at")


def _identity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="device id (or service name with --service)")
    parser.add_argument("--service", action="store_true", help=f"one of {auth.SERVICES}")
    _broker_dir(parser)


def _ca(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--ca-cert", type=Path, required=required)
    parser.add_argument("--ca-key", type=Path, required=required, help="kept off the broker")


def _init(args: argparse.Namespace) -> int:
    directory: Path = args.broker_dir
    directory.mkdir(parents=True, exist_ok=True)
    now = _now()
    if not args.ca_key.exists():
        ca_key = auth.new_key()
        _write(args.ca_key, auth.key_pem(ca_key), SECRET_MODE)
        _write(args.ca_cert, auth.pem(auth.new_ca("nabij device CA", ca_key, now)), 0o644)
        print(f"new CA: {args.ca_cert} (its key {args.ca_key}: keep it off the broker)")
    ca, ca_key = _load_ca(args)
    _write(directory / CA_CERT, auth.pem(ca), BROKER_FILE_MODE)
    _write(directory / ACL, auth.render_acl(args.topic_prefix).encode(), BROKER_FILE_MODE)
    server_key = auth.new_key()
    server = auth.issue(ca, ca_key, server_key, args.server_name, now, server=True)
    _write(directory / SERVER_KEY, auth.key_pem(server_key), BROKER_FILE_MODE)
    _write(directory / SERVER_CERT, auth.pem(server), BROKER_FILE_MODE)
    if not (directory / CRL).exists():
        _write(
            directory / CRL, auth.pem(auth.revocation_list(ca, ca_key, [], now)), BROKER_FILE_MODE
        )
    if not (directory / PASSWD).exists():
        _write(directory / PASSWD, b"", BROKER_FILE_MODE)
    print(f"broker directory ready: {directory}")
    return 0


def _add(args: argparse.Namespace) -> int:
    username = _username(args)
    directory: Path = args.broker_dir
    args.secrets.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    secret_path = args.secrets / f"{username}.password"
    _write(secret_path, f"{password}\n".encode(), SECRET_MODE)
    hashed = auth.hash_password(password, os.urandom(auth.SALT_BYTES))
    passwd = _read_text(directory / PASSWD)
    _write(directory / PASSWD, auth.with_user(passwd, username, hashed).encode(), BROKER_FILE_MODE)
    print(f"{username}: password in {secret_path}")
    if args.cert:
        if args.ca_cert is None or args.ca_key is None:
            raise SystemExit("nabij device add --cert needs --ca-cert and --ca-key")
        ca, ca_key = _load_ca(args)
        key = auth.new_key()
        cert = auth.pem(auth.issue(ca, ca_key, key, username, _now()))
        _write(args.secrets / f"{username}.key", auth.key_pem(key), SECRET_MODE)
        _write(args.secrets / f"{username}.crt", cert, 0o644)
        _write(directory / ISSUED / f"{username}.crt", cert, 0o644)
        print(f"{username}: certificate {args.secrets / f'{username}.crt'} and its key beside it")
    _tell_reload(None)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    username = _username(args)
    directory: Path = args.broker_dir
    passwd, had_password = auth.without_user(_read_text(directory / PASSWD), username)
    _write(directory / PASSWD, passwd.encode(), BROKER_FILE_MODE)
    issued = directory / ISSUED / f"{username}.crt"
    if issued.exists():
        if args.ca_cert is None or args.ca_key is None:
            raise SystemExit(f"{username} has a certificate: revoking it needs --ca-cert, --ca-key")
        ca, ca_key = _load_ca(args)
        serial = x509.load_pem_x509_certificate(issued.read_bytes()).serial_number
        crl_path = directory / CRL
        serials = auth.revoked_serials(crl_path.read_bytes()) if crl_path.exists() else []
        crl = auth.revocation_list(ca, ca_key, [*serials, serial], _now())
        _write(crl_path, auth.pem(crl), BROKER_FILE_MODE)
        issued.unlink()
        print(f"{username}: certificate {serial:x} revoked (Mosquitto keeps a TLS connection that"
              " is already open: restart the broker to cut it)")  # fmt: skip
    elif not had_password:
        print(f"{username}: no credentials to revoke")
        return 1
    print(f"{username}: password removed")
    _tell_reload(args.pid_file)
    return 0


def _username(args: argparse.Namespace) -> str:
    try:
        return auth.service_username(args.id) if args.service else auth.device_username(args.id)
    except auth.BrokerAuthError as err:
        raise SystemExit(f"nabij device: {err}") from None


def _tell_reload(pid_file: Path | None) -> None:
    """Mosquitto rereads its password file, ACL and CRL on SIGHUP and drops connections whose
    credentials are gone."""
    if pid_file is None:
        print("make the broker reload: systemctl reload mosquitto (or kill -HUP its pid)")
        return
    os.kill(int(pid_file.read_text(encoding="utf-8").strip()), signal.SIGHUP)
    print("broker reloaded (SIGHUP)")


def _load_ca(args: argparse.Namespace) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca = x509.load_pem_x509_certificate(args.ca_cert.read_bytes())
    return ca, auth.load_key(args.ca_key.read_bytes())


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically, created with `mode` from the start (a secret is never readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    os.replace(temporary, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
