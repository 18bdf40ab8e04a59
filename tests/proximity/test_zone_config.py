"""Zones, exemptions and time zones in `orders.toml`: loaded in config, errors by key and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nabij.config import ConfigError, load_config
from services.cli import main

HEAD = """[[order]]
id = "O-1"
offender_device = "ank-0001"
victim_devices = ["vic-0001"]
alarm_m = 500
"""
SQUARE = {
    "type": "Polygon",
    "coordinates": [
        [[4.87, 52.338], [4.876, 52.338], [4.876, 52.341], [4.87, 52.341], [4.87, 52.338]]
    ],
}


def write(tmp_path: Path, orders: str, files: dict[str, object] | None = None) -> Path:
    (tmp_path / "orders.toml").write_text(orders, encoding="utf-8")
    for name, body in (files or {}).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body if isinstance(body, str) else json.dumps(body), encoding="utf-8")
    return tmp_path


def problems(directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(directory, env={})
    return [str(p) for p in err.value.problems]


def test_the_repository_example_loads_its_geojson_into_the_orders() -> None:
    """config/orders.toml has a circle, a GeoJSON polygon and a corridor exemption; after loading
    the core gets coordinates (the geometry), never a path to open."""
    config = load_config(Path(__file__).resolve().parents[2] / "config", env={})
    order = config.orders[0]
    assert [z.name for z in order.zone] == ["home", "work"]
    assert order.zone[1].geometry is not None and order.zone[1].geometry.type == "Polygon"
    assert order.exemption[0].corridor_geometry is not None


def test_zone_problems_are_reported_by_key_path_and_line(tmp_path: Path) -> None:
    """A missing file, a GeoJSON that is not a polygon, a zone that is both circle and polygon,
    a half circle and an unknown zone key are all reported at once, each with its line."""
    orders = (
        HEAD
        + '[[order.zone]]\nname = "a"\ngeojson = "zones/missing.geojson"\n'  # lines 6-8
        + '[[order.zone]]\nname = "b"\ngeojson = "zones/line.geojson"\n'  # lines 9-11
        + '[[order.zone]]\nname = "c"\nlat = 52.0\nlon = 4.0\nradius_m = 100\ngeojson = "x"\n'
        + '[[order.zone]]\nname = "d"\nlat = 52.0\n'
        + '[[order.zone]]\nname = "e"\nlat = 52.0\nlon = 4.0\nradius_m = 100\ncolour = "red"\n'
    )
    line = {"type": "LineString", "coordinates": [[4.0, 52.0], [4.1, 52.1]]}
    found = problems(write(tmp_path, orders, {"zones/line.geojson": line}))
    assert any("orders.toml:" in p and "order[0].zone[2]" in p and "not both" in p for p in found)
    assert any("order[0].zone[3]" in p and "all of lat, lon and radius_m" in p for p in found)
    assert any("orders.toml:26: order[0].zone[4].colour: unknown key" in p for p in found), found
    # The files are read only once the TOML itself is valid: fix it and see them reported.
    orders = HEAD + (
        '[[order.zone]]\nname = "a"\ngeojson = "zones/missing.geojson"\n'
        '[[order.zone]]\nname = "b"\ngeojson = "zones/line.geojson"\n'
    )
    found = problems(write(tmp_path, orders, {"zones/line.geojson": line}))
    assert found[0].startswith("orders.toml:8: order[0].zone[0].geojson: missing file")
    assert found[1].startswith("orders.toml:11: order[0].zone[1].geojson:")
    assert "LineString is not a Polygon" in found[1]


def test_invalid_polygons_and_bad_json_are_config_errors(tmp_path: Path) -> None:
    """A self-intersecting polygon, an unclosed ring and broken JSON are each reported."""
    bowtie = {
        "type": "Polygon",
        "coordinates": [[[4, 52], [4.1, 52.1], [4.1, 52], [4, 52.1], [4, 52]]],
    }
    open_ring = {"type": "Polygon", "coordinates": [[[4, 52], [4.1, 52], [4.1, 52.1], [4, 52.1]]]}
    orders = HEAD + "".join(
        f'[[order.zone]]\nname = "{n}"\ngeojson = "{n}.geojson"\n' for n in ("bow", "open", "bad")
    )
    found = problems(
        write(
            tmp_path, orders, {"bow.geojson": bowtie, "open.geojson": open_ring, "bad.geojson": "{"}
        )
    )
    assert len(found) == 3
    assert "Self-intersection" in found[0]
    assert "end where it starts" in found[1]
    assert "not valid JSON" in found[2]


def test_exemptions_and_time_zones_are_validated(tmp_path: Path) -> None:
    """An unknown time zone, a rule naming no zone, a bad day, a bad clock time and a missing
    corridor file are reported with their key paths."""
    orders = (
        HEAD
        + 'timezone = "Mars/Olympus"\n'
        + "[[order.exemption]]\n"
        + 'days = ["mon", "someday"]\nstart = "25:00"\nend = "09:00"\nrules = ["zone:nowhere"]\n'
    )
    found = "\n".join(problems(write(tmp_path, orders)))
    assert "order[0].timezone" in found and "unknown time zone" in found
    assert "order[0].exemption[0].days[1]" in found
    assert "order[0].exemption[0].start" in found
    orders = (
        HEAD
        + '[[order.zone]]\nname = "work"\ngeojson = "w.geojson"\n'
        + "[[order.exemption]]\n"
        + 'days = ["mon"]\nstart = "08:00"\nend = "09:00"\nrules = ["zone:nowhere"]\n'
    )
    found = "\n".join(problems(write(tmp_path, orders, {"w.geojson": SQUARE})))
    assert "names no zone" in found
    orders = (
        HEAD
        + '[[order.zone]]\nname = "work"\ngeojson = "w.geojson"\n'
        + "[[order.exemption]]\n"
        + 'days = ["mon"]\nstart = "08:00"\nend = "09:00"\nrules = ["zone:work"]\n'
        + 'corridor = "nope.geojson"\n'
    )
    found = "\n".join(problems(write(tmp_path, orders, {"w.geojson": SQUARE})))
    assert "orders.toml:14: order[0].exemption[0].corridor: missing file" in found


def test_check_config_accepts_zones_and_exemptions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`nabij check-config` validates a directory with a GeoJSON zone and a corridor exemption."""
    orders = (
        HEAD
        + '[[order.zone]]\nname = "work"\ngeojson = "zones/w.geojson"\n'
        + '[[order.exemption]]\ndays = ["sat"]\nstart = "22:00"\nend = "01:00"\n'
        + 'rules = ["zone:work", "proximity"]\ncorridor = "zones/w.geojson"\n'
    )
    directory = write(
        tmp_path, orders, {"zones/w.geojson": {"type": "Feature", "geometry": SQUARE}}
    )
    assert main(["check-config", str(directory)]) == 0
    assert "valid (1 orders, 1 pairs)" in capsys.readouterr().out
