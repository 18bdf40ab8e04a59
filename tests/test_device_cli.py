"""`nabij device add|revoke`: secrets in files of mode 0600, only hashes at the broker."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from services.cli import main


def _add(tmp_path: Path, *args: str) -> int:
    broker, secrets = tmp_path / "broker", tmp_path / "secrets"
    return main(["device", "add", *args, "--broker-dir", str(broker), "--secrets", str(secrets)])


def test_add_writes_the_secret_0600_and_only_its_hash_to_the_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The password is in the secret file (owner-only), never in the output, and the broker's
    password file holds a `$7$` hash for the device; revoke removes that line again."""
    assert _add(tmp_path, "ank-1") == 0
    assert _add(tmp_path, "proximity", "--service") == 0
    secret = tmp_path / "secrets" / "ank-1.password"
    password = secret.read_text(encoding="utf-8").strip()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    passwd = (tmp_path / "broker" / "passwd").read_text(encoding="utf-8")
    assert [line.split(":")[0] for line in passwd.splitlines()] == ["ank-1", "nabij.proximity"]
    assert "ank-1:$7$101$" in passwd and password not in passwd
    assert password not in capsys.readouterr().out
    broker = str(tmp_path / "broker")
    assert main(["device", "revoke", "ank-1", "--broker-dir", broker]) == 0
    passwd = (tmp_path / "broker" / "passwd").read_text(encoding="utf-8")
    assert passwd.startswith("nabij.proximity:") and "ank-1" not in passwd
    assert main(["device", "revoke", "ank-1", "--broker-dir", broker]) == 1


@pytest.mark.parametrize("bad", ["ank/1", "+", "nabij.proximity"])
def test_an_id_outside_the_contract_is_refused_with_a_reason(tmp_path: Path, bad: str) -> None:
    with pytest.raises(SystemExit, match="invalid device id"):
        _add(tmp_path, bad)
    assert not (tmp_path / "broker" / "passwd").exists()
