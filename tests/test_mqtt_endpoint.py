"""Where a client's broker identity comes from: URL, settings, secret file, environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from nabij.settings import MqttSettings
from services.shell.mqtt import MqttEndpoint, MqttUrlError


def test_a_url_without_credentials_stays_anonymous_for_a_development_broker() -> None:
    endpoint = MqttEndpoint.from_settings(MqttSettings(url="mqtt://127.0.0.1:1883"), env={})
    assert (endpoint.username, endpoint.password, endpoint.tls) == (None, None, False)
    assert endpoint.mqtt5


def test_the_password_comes_from_the_environment_before_the_file(tmp_path: Path) -> None:
    """`NABIJ_MQTT_PASSWORD` wins over `password_file`, whose first line is the password."""
    secret = tmp_path / "nabij.proximity.password"
    secret.write_text("from-file\n", encoding="utf-8")
    settings = MqttSettings(username="nabij.proximity", password_file=secret)
    assert MqttEndpoint.from_settings(settings, env={}).password == "from-file"
    from_env = MqttEndpoint.from_settings(settings, env={"NABIJ_MQTT_PASSWORD": "from-env"})
    assert (from_env.username, from_env.password) == ("nabij.proximity", "from-env")


def test_a_missing_or_empty_password_file_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("", encoding="utf-8")
    for path in (tmp_path / "missing", empty):
        with pytest.raises(MqttUrlError, match="password file"):
            MqttEndpoint.from_settings(MqttSettings(password_file=path), env={})


def test_certificates_need_a_tls_url(tmp_path: Path) -> None:
    """A client certificate configured for a plain-text URL is refused, not silently unused."""
    ca = tmp_path / "ca.crt"
    with pytest.raises(MqttUrlError, match="mqtts://"):
        MqttEndpoint.from_settings(MqttSettings(url="mqtt://h:1883", ca_file=ca), env={})
    tls = MqttEndpoint.from_settings(MqttSettings(url="mqtts://h", ca_file=ca), env={})
    assert (tls.tls, tls.port, tls.ca_file) == (True, 8883, ca)


def test_a_device_identity_is_its_certificate_on_tls_else_its_password(tmp_path: Path) -> None:
    (tmp_path / "ank-1.password").write_text("pw\n", encoding="utf-8")
    (tmp_path / "ank-1.crt").write_text("", encoding="utf-8")
    plain = MqttEndpoint.from_url("mqtt://h").for_device("ank-1", tmp_path)
    assert (plain.username, plain.password, plain.cert_file) == ("ank-1", "pw", None)
    tls = MqttEndpoint.from_url("mqtts://h").for_device("ank-1", tmp_path)
    assert (tls.cert_file, tls.key_file) == (tmp_path / "ank-1.crt", tmp_path / "ank-1.key")


def test_only_the_demo_brokers_protocol_query_is_understood() -> None:
    assert not MqttEndpoint.from_url("mqtt://h:1?protocol=3.1.1").mqtt5
    with pytest.raises(MqttUrlError, match="query"):
        MqttEndpoint.from_url("mqtt://h:1?protocol=5")
