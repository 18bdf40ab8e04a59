"""The file list reads like the architecture: these pins keep it so when code moves."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).parents[1]
PRODUCT = ("nabij", "services", "simulators", "bench")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, absolute names (`from a import b` gives `a` and `a.b`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def _importers(package: str) -> set[str]:
    return {
        path.relative_to(REPO).as_posix()
        for top in PRODUCT
        for path in (REPO / top).rglob("*.py")
        if any(_within(name, (package,)) for name in _imports(path))
    }


def test_the_shared_package_depends_on_no_service_or_simulator() -> None:
    """nabij/ is the contract every component imports; it never reaches back into a component."""
    offenders = {
        path.relative_to(REPO).as_posix(): sorted(
            name for name in _imports(path) if _within(name, ("services", "simulators"))
        )
        for path in (REPO / "nabij").rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_only_the_demo_imports_the_embedded_broker_and_store() -> None:
    """amqtt and fakeredis are the `nabij[demo]` extra: the image, without them, must never
    import them, so only the demo may."""
    assert _importers("services.demo.embedded") == {"services/demo/run.py"}
    assert _importers("amqtt") | _importers("fakeredis") == {"services/demo/embedded.py"}


def test_the_cores_import_no_shell() -> None:
    """The pure cores take data and return data: no MQTT, Redis, HTTP or logging plumbing."""
    cores = [REPO / "services" / "proximity" / "core", REPO / "services" / "alarm_gateway" / "core"]
    plumbing = ("services.shell", "paho", "redis", "structlog", "prometheus_client")
    offenders = {
        path.relative_to(REPO).as_posix(): sorted(
            name for name in _imports(path) if _within(name, plumbing)
        )
        for core in cores
        for path in core.rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}
