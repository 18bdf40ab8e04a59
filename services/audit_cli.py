"""`nabij audit`: keygen, export, verify, prune (the evidence trail, docs/evidence.md)."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

from nabij.evidence import keyfile
from nabij.evidence.bundle import Scope
from nabij.evidence.chain import Signer, key_fingerprint
from nabij.evidence.export import export, verify_directory
from nabij.evidence.store import prune
from nabij.keys import Keys
from services.shell.cli_support import add_config_argument, load_from_args
from services.shell.redis_io import connect_as

EXIT_ALTERED = 1
EXIT_NO_KEY = 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="the evidence trail: keys, export, verify, prune")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    cmd = actions.add_parser("keygen", help="make the Ed25519 key of [audit] key_file")
    cmd.add_argument("key_file", type=Path, help="private key to write (never overwritten)")
    cmd.set_defaults(handler=_keygen)

    cmd = actions.add_parser("export", help="write a verifiable bundle of one order's records")
    add_config_argument(cmd)
    cmd.add_argument("--order", required=True)
    cmd.add_argument("--since", type=_instant, default=None, help="ISO 8601 time or epoch ms")
    cmd.add_argument("--until", type=_instant, default=None, help="ISO 8601 time or epoch ms")
    cmd.add_argument("--out", type=Path, required=True, help="directory to write")
    cmd.add_argument("--role", choices=["police", "probation"], default="probation")
    cmd.add_argument("--by", required=True, help="who exports (name or badge number)")
    cmd.set_defaults(handler=_export)

    cmd = actions.add_parser("verify", help="prove a bundle complete and unaltered (no Redis)")
    cmd.add_argument("directory", type=Path)
    cmd.add_argument("--key", type=Path, default=None, help="the public key got out of band")
    cmd.set_defaults(handler=_verify)

    cmd = actions.add_parser("prune", help="drop record bodies past their [audit] retention")
    add_config_argument(cmd)
    cmd.set_defaults(handler=_prune)


def _instant(text: str) -> int:
    if text.isdigit():
        return int(text)
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def _keygen(args: argparse.Namespace) -> int:
    key, made = keyfile.make(args.key_file)
    fingerprint = key_fingerprint(key.public_key())
    print(f"{'made' if made else 'kept the existing'} {args.key_file} (key {fingerprint})")
    return 0


def _export(args: argparse.Namespace) -> int:
    config = load_from_args(args)
    settings = config.settings
    if settings.audit.key_file is None:
        print("no [audit] key_file in the configuration: nothing to export", file=sys.stderr)
        return EXIT_NO_KEY
    try:
        signer = Signer.of(keyfile.load(settings.audit.key_file))
    except keyfile.KeyFileError as err:
        print(err, file=sys.stderr)
        return EXIT_NO_KEY
    client = connect_as(settings.redis, "console")
    scope = Scope(args.order, args.role, args.since, args.until)
    now_ms = time.time_ns() // 1_000_000
    keys = Keys(settings.redis.key_prefix)
    done = export(client, keys, signer, settings.audit, scope, args.by, now_ms, args.out)
    print(
        f"wrote {args.out}: {done.records} records of {done.writers} writers, "
        f"{done.shown} in full (key {signer.fingerprint})"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    expected = args.key.read_bytes() if args.key is not None else None
    try:
        report = verify_directory(args.directory, expected)
    except keyfile.KeyFileError as err:
        print(f"NOT VERIFIED: {err}", file=sys.stderr)
        return EXIT_ALTERED
    for note in report.notes:
        print(note)
    if report.ok:
        print(f"verified: {args.directory} is complete and unaltered")
        return 0
    for problem in report.problems:
        print(f"NOT VERIFIED: {problem}", file=sys.stderr)
    return EXIT_ALTERED


def _prune(args: argparse.Namespace) -> int:
    settings = load_from_args(args).settings
    client = connect_as(settings.redis, "console")
    keys = Keys(settings.redis.key_prefix)
    dropped = prune(client, keys, settings.audit, time.time_ns() // 1_000_000)
    print(f"pruned the bodies of {dropped} records")
    return 0
