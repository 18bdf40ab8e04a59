"""The console's surface: the documented API, and nothing fetched from outside."""

from __future__ import annotations

import re
from pathlib import Path

import fakeredis
from fastapi.testclient import TestClient

from nabij.keys import Keys
from nabij.settings import ConsoleSettings
from services.console.app import HERE, create_app

API = {
    "/api/login", "/api/logout", "/api/alarms", "/api/alarms/{alarm_id}",
    "/api/alarms/{alarm_id}/ack", "/api/alarms/{alarm_id}/resolve", "/api/orders",
    "/api/status", "/api/events",
}  # fmt: skip
URL = re.compile(r"(?:src|href)=\"(?!/)|url\((?!['\"]?(?:data:|images/))|https?://")


def test_openapi_documents_the_whole_api() -> None:
    """Every API route is in `/api/openapi.json`; no page route is."""
    app = create_app(fakeredis.FakeRedis(), Keys("t"), ConsoleSettings(), lambda: 0)
    assert set(app.openapi()["paths"]) == API


def test_pages_and_scripts_load_nothing_from_outside() -> None:
    """Templates, script and style refer only to the console's own paths: it works offline."""
    own = [*(HERE / "templates").glob("*.html"), HERE / "static" / "console.js",
           HERE / "static" / "console.css"]  # fmt: skip
    for path in own:
        text = Path(path).read_text(encoding="utf-8")
        assert URL.search(text) is None, (path, URL.search(text))
    assert (HERE / "static" / "vendor" / "leaflet-1.9.4" / "LICENSE").exists()


def test_healthz_answers_without_a_session_or_redis() -> None:
    """The container's health check reaches the console without logging in; Redis is not asked
    (a console whose Redis is down is alive, and says so on its pages)."""
    down = fakeredis.FakeRedis(connected=False)
    client = TestClient(create_app(down, Keys("t"), ConsoleSettings(), lambda: 0))
    reply = client.get("/healthz")
    assert (reply.status_code, reply.text) == (200, "ok")
    assert client.get("/board", follow_redirects=False).status_code != 200
