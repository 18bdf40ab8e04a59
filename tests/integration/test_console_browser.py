"""The console in a real headless Chromium (Debian's `chromium`, driven by playwright) over the
real gateway and proximity services, real Redis and Mosquitto, and a simulated approach: what a
probation and a police dispatcher see and do. Takes the screenshots of docs/console.md."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from playwright.sync_api import Browser, Page, Response, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from nabij.contract import Notice
from tests.integration.conftest import StackFactory
from tests.integration.console import (
    POLICE,
    PROBATION,
    VICTIM_DIGITS,
    add_operators,
    serve_console,
)
from tests.integration.stack import Stack, wait_until
from tests.integration.test_alarm_path import fast_escalation, walk

pytestmark = pytest.mark.integration
CHROMIUM: Final = "/usr/bin/chromium"
# No sandbox (tests may run as root in a container), nothing fetched from the internet.
CHROMIUM_ARGS: Final = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
# `make screenshots` sets this to docs/img to refresh the pictures in docs/console.md; a plain
# test run keeps its screenshots in its own temporary directory, so it leaves the tree clean.
SCREENSHOTS_ENV: Final = "NABIJ_SCREENSHOTS"
ACK_TIMEOUT_S: Final = 20


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: `make test` installs it (scripts/ensure-servers.sh)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def log_in(browser: Browser, url: str, who: tuple[str, str], seen: list[str]) -> Page:
    """A fresh browser session logged in as `who`; `seen` collects every answer body it gets
    (the live event stream aside, which never ends)."""
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()

    def keep(response: Response) -> None:
        if "text/event-stream" not in response.headers.get("content-type", ""):
            with contextlib.suppress(PlaywrightError):  # a redirect has no body to read
                seen.append(response.text())

    page.on("response", keep)
    page.goto(f"{url}/login")
    page.fill("#name", who[0])
    page.fill("#password", who[1])
    page.click("button[type=submit]")
    page.wait_for_url("**/board")
    return page


def of_alarm(stack: Stack, queue: str, alarm_id: str) -> list[Notice]:
    return [n for n in stack.notices(queue) if n.alarm_id == alarm_id]  # type: ignore[arg-type]  # a queue name


def test_dispatchers_take_an_approach_alarm_in_the_browser(
    make_stack: StackFactory, browser: Browser, tmp_path: Path
) -> None:
    """Probation sees the alarm appear without reloading (banner), acknowledges it with a double
    click: one acknowledgement, with her name, on both queues, and no escalation after it; then
    the pre-alert from the keyboard.
    Police see the victim's position on the alarm page; nothing probation's browser received
    holds her coordinates."""
    screenshots = Path(os.environ.get(SCREENSHOTS_ENV, tmp_path))
    stack = make_stack(extra_toml=fast_escalation(ack_timeout_s=ACK_TIMEOUT_S))
    add_operators(stack)
    stack.start_in_process()
    console = serve_console(stack)
    probation_saw: list[str] = []
    board = log_in(browser, console.url, PROBATION, probation_saw)
    board.evaluate("window.notReloaded = true")

    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    walk(offender, victim, stack.clock(), [1500, 1100, 900, 700, 400, 300, 200, 200])
    notices = stack.wait_notices(
        "police", lambda ns: any(n.event == "escalated" for n in ns), "escalation to police"
    )
    alarm_id = next(n.alarm_id for n in notices if n.kind == "proximity_alarm")
    row = board.locator(f'tr[data-alarm-id="{alarm_id}"]')
    expect(row).to_be_visible(timeout=10_000)
    assert board.evaluate("window.notReloaded") is True
    expect(board.locator("#banner")).to_be_visible()
    assert board.locator("tbody.situation").count() == 1  # pre-alert and alarm: one situation
    assert board.locator("tr[data-alarm-id]").count() == 2
    board.screenshot(path=str(screenshots / "console-board.png"))

    row.locator(".ack-button").dblclick()
    expect(board.locator("#outcome")).to_contain_text(f"acknowledged by {PROBATION[0]}")
    expect(row).to_contain_text(f"acknowledged by {PROBATION[0]}", timeout=10_000)
    for queue in ("probation", "police"):
        stack.wait_notices(queue, lambda ns: any(n.event == "acknowledged" and n.alarm_id ==
                           alarm_id for n in ns), f"acknowledged at {queue}")  # fmt: skip
    acked_at = stack.clock()
    wait_until(lambda: stack.clock() > acked_at + 3 * ACK_TIMEOUT_S * 1000, what="3 ack timeouts")
    for queue in ("probation", "police"):
        events = [n.event for n in of_alarm(stack, queue, alarm_id)]
        acks = [n for n in of_alarm(stack, queue, alarm_id) if n.event == "acknowledged"]
        assert [n.by for n in acks] == [PROBATION[0]], (queue, events)
        assert "escalated" not in events[events.index("acknowledged") :], (queue, events)

    # The keyboard: next, next (the pre-alert, below its alarm), acknowledge; the banner goes.
    pre_alert = next(
        n.alarm_id for n in stack.notices("probation") if n.kind == "proximity_pre_alert"
    )
    for key in ("j", "j", "a"):
        board.keyboard.press(key)
    expect(board.locator("#outcome")).to_contain_text(f"{pre_alert} acknowledged by {PROBATION[0]}")
    expect(board.locator("#banner")).to_be_hidden()

    police_saw: list[str] = []
    police = log_in(browser, console.url, POLICE, police_saw)
    police.goto(f"{console.url}/alarms/{alarm_id}")
    expect(police.locator("#victim-position")).to_contain_text(VICTIM_DIGITS[0])
    police.on("console", lambda m: print("browser console:", m.text))
    police.on("pageerror", lambda e: print("page error:", e))
    police.reload()
    # Her, him (his track and positions), the two rings.
    expect(police.locator("#map path.leaflet-interactive")).not_to_have_count(0)
    assert police.locator("#map path.leaflet-interactive").count() >= 4
    police.screenshot(path=str(screenshots / "console-alarm.png"), full_page=True)

    board.goto(f"{console.url}/alarms/{alarm_id}")
    expect(board.locator("#timeline li")).not_to_have_count(0)
    board.goto(f"{console.url}/orders")
    assert probation_saw and any(alarm_id in text for text in probation_saw)
    for text in probation_saw:
        assert not any(d in text for d in VICTIM_DIGITS), text[:300]
    console.stop()
