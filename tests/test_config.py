"""Configuration: accepted exactly as documented, every problem reported by key path and line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nabij.config import ConfigError, load_config
from nabij.orders import InForce
from services.cli import main

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config"

ISSUE_SETTINGS = """
[mqtt]
url = "mqtt://127.0.0.1:1883"
topic_prefix = "nabij/v1"
[redis]
url = "redis://127.0.0.1:6379/0"
key_prefix = "nabij"
[proximity]
enter_dwell_s = 10
exit_dwell_s = 60
critical_m = 100
max_fix_age_s = 120
location_unknown_s = 180
[escalation.proximity_alarm]      # one table per alarm kind
priority = 1
queues = ["probation"]            # first recipients
ack_timeout_s = 60
escalate_to = ["police"]          # empty: never escalates, the queues are reminded instead
"""

ISSUE_ORDERS = """
[[order]]
id = "ORD-2026-0001"
offender_device = "ank-0001"
victim_devices = ["vic-0001"]     # one offender may have several victims; a victim several orders
alarm_m = 500                     # alarm ring
pre_alert_m = 1000                # pre-alert ring (default: twice alarm_m)
"""


def write(directory: Path, settings: str, orders: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "nabij.toml").write_text(settings, encoding="utf-8")
    (directory / "orders.toml").write_text(orders, encoding="utf-8")
    return directory


def test_the_issue_examples_load_as_written(tmp_path: Path) -> None:
    """Every key the contract documents is accepted, and defaults fill what is left out."""
    config = load_config(write(tmp_path, ISSUE_SETTINGS, ISSUE_ORDERS), env={})
    assert config.orders[0].pre_alert_ring_m == 1000
    assert config.settings.policy("proximity_alarm").escalate_to == ["police"]
    assert config.settings.policy("aware_button").queues == ["police", "probation"]
    assert config.settings.proximity.critical_m == 100


def test_pre_alert_defaults_to_twice_the_alarm_ring(tmp_path: Path) -> None:
    """As French law has it: the pre-alert distance is twice the alarm distance unless given."""
    orders = ISSUE_ORDERS.replace("pre_alert_m = 1000", "")
    config = load_config(write(tmp_path, ISSUE_SETTINGS, orders), env={})
    assert config.orders[0].pre_alert_ring_m == 1000


def test_environment_overrides_urls(tmp_path: Path) -> None:
    """NABIJ_MQTT_URL and NABIJ_REDIS_URL win over the files."""
    env = {"NABIJ_MQTT_URL": "mqtt://broker:1884", "NABIJ_REDIS_URL": "redis://store:6380/1"}
    config = load_config(write(tmp_path, ISSUE_SETTINGS, ISSUE_ORDERS), env=env)
    assert (config.settings.mqtt.url, config.settings.redis.url) == tuple(env.values())


def test_every_problem_is_listed_with_key_path_and_line(tmp_path: Path) -> None:
    """Unknown keys, out-of-range values and bad references are all reported at once."""
    settings = ISSUE_SETTINGS.replace("critical_m = 100", "critical_m = -5\ncritcal_m = 100")
    settings += '\n[escalation.proximity_alarm_x]\npriority = 1\nqueues = ["police"]\n'
    orders = ISSUE_ORDERS.replace('"vic-0001"]', '"vic 0001"]') + '\n[[order]]\nid = "X"\n'
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, settings, orders), env={})
    report = {(p.file, p.path, p.line) for p in caught.value.problems}
    assert ("nabij.toml", "proximity.critical_m", 11) in report
    assert ("nabij.toml", "proximity.critcal_m", 12) in report
    assert any(path.startswith("escalation.proximity_alarm_x") for _f, path, _l in report)
    assert ("orders.toml", "order[0].victim_devices[0]", 5) in report
    assert ("orders.toml", "order[1].offender_device", 9) in report
    assert all("unknown key" in p.message for p in caught.value.problems if "critcal" in p.path)


def test_rings_must_nest(tmp_path: Path) -> None:
    """A pre-alert ring inside the alarm ring is a mistake, not a setting."""
    orders = ISSUE_ORDERS.replace("pre_alert_m = 1000", "pre_alert_m = 400")
    with pytest.raises(ConfigError, match="pre_alert_m must be larger than alarm_m"):
        load_config(write(tmp_path, ISSUE_SETTINGS, orders), env={})


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    """A broken file is reported with its line, not as a traceback."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "[mqtt\nurl = 1\n", ISSUE_ORDERS), env={})
    assert caught.value.problems[0].line == 1


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`nabij check-config DIR` says valid for the shipped config and lists problems otherwise."""
    assert main(["check-config", str(REPO_CONFIG)]) == 0
    assert "valid" in capsys.readouterr().out
    broken = tmp_path / "broken"
    shutil.copytree(REPO_CONFIG, broken)
    (broken / "nabij.toml").write_text("[mqtt]\nport = 1883\n", encoding="utf-8")
    assert main(["check-config", str(broken)]) == 2
    assert "nabij.toml:2: mqtt.port: unknown key" in capsys.readouterr().err


def test_nested_arrays_of_tables_name_their_own_line(tmp_path: Path) -> None:
    """Two orders: an error in order[1].zone[1] points at order[1]'s second zone, not order[0]'s."""
    zone = '[[order.zone]]\nname = "{name}"\nlat = 52.0\nlon = 4.0\nradius_m = {radius}\n'
    orders = (
        ISSUE_ORDERS
        + zone.format(name="a", radius=100)
        + zone.format(name="b", radius=100)
        + ISSUE_ORDERS.replace("0001", "0002")
        + zone.format(name="c", radius=100)
        + zone.format(name="d", radius=-1)
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, ISSUE_SETTINGS, orders), env={})
    expected = orders.splitlines().index("radius_m = -1") + 1
    report = {(p.path, p.line) for p in caught.value.problems}
    assert report == {("order[1].zone[1].radius_m", expected)}


def test_validity_needs_an_offset_and_ends_after_it_starts(tmp_path: Path) -> None:
    """`starts_at`/`ends_at` are ISO 8601 with offset; an order holds from one until the other."""
    valid = (
        ISSUE_ORDERS + 'starts_at = "2026-12-01T09:00:00+01:00"\nends_at = 2027-06-01T00:00:00Z\n'
    )
    order = load_config(write(tmp_path / "ok", ISSUE_SETTINGS, valid), env={}).orders[0]
    start_ms = 1_796_112_000_000  # 2026-12-01T08:00:00Z
    assert order.validity(start_ms - 1) == "not_started"
    assert order.validity(start_ms) == "in_force"
    assert order.validity(1_811_808_000_000) == "ended"  # 2027-06-01T00:00:00Z
    # When the service must look again (it keeps what is in force until then).
    assert order.next_validity_change(start_ms - 1) == start_ms
    assert order.next_validity_change(start_ms) == 1_811_808_000_000
    assert order.next_validity_change(1_811_808_000_000) is None
    # What the service keeps: the same answer until the order starts, or the clock steps back.
    orders = (order,)
    before = InForce.of(orders, start_ms - 10)
    assert before.in_force == () and before.validity["not_started"] == 1
    assert before.holds(orders, start_ms - 1)
    assert not before.holds(orders, start_ms)  # it started: work it out again
    assert not before.holds(orders, start_ms - 11)  # a clock stepped back
    assert not before.holds((order,), start_ms - 1)  # another orders version
    assert InForce.of(orders, start_ms).in_force == orders
    naive = ISSUE_ORDERS + 'starts_at = "2026-12-01T09:00:00"\n'
    backwards = ISSUE_ORDERS + "starts_at = 2027-01-01T00:00:00Z\nends_at = 2026-01-01T00:00:00Z\n"
    for name, orders in (("naive", naive), ("backwards", backwards)):
        with pytest.raises(ConfigError) as caught:
            load_config(write(tmp_path / name, ISSUE_SETTINGS, orders), env={})
        assert {p.path for p in caught.value.problems} <= {"order[0].starts_at", "order[0]"}


def test_the_evidence_trail_on_redis_cluster_is_refused_at_start(tmp_path: Path) -> None:
    """A shard's evidence keys are not in its slot: the combination is a clear error, not a
    service whose every commit Redis Cluster refuses."""
    settings = (
        ISSUE_SETTINGS.replace('key_prefix = "nabij"', 'key_prefix = "{nabij}"\ncluster = true')
        + '[audit]\nkey_file = "audit.pem"\n'
    )
    with pytest.raises(ConfigError, match="needs a single Redis"):
        load_config(write(tmp_path, settings, ISSUE_ORDERS), env={})
