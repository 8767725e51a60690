"""The agent view in a real headless browser (Debian's chromium, driven by Playwright): an agent signs in,
sees the next caller's context masked, accepts, sees the caller come through without reloading by hand,
opens the identity code (audited), and marks the call done with a note."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.test_agent_api import live_call
from tests.integration.test_web_auth import CHEAP, MASKED, PASSWORD, PID
from voicebot.metrics import CallMetrics
from voicebot.storage import SqliteCallStore
from voicebot.web.accounts import add_account
from voicebot.web.api import UNMASK_ACTION, make_app
from voicebot.web.auth import Auth, Passwords
from voicebot.web.server import run_http

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
#: waits on the page: generous, for a loaded machine (the page reloads itself every few seconds)
PAGE_WAIT_MS = 60_000

async_api = pytest.importorskip("playwright.async_api", reason="pip install playwright (the dev extras)")


async def test_an_agent_accepts_a_caller_opens_the_code_and_marks_the_call_done_in_the_browser(tmp_path):
    if not CHROMIUM.exists():
        message = "Debian's chromium is not installed (make test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    async with SqliteCallStore(tmp_path / "voicebot.sqlite3") as store:
        passwords = Passwords(CHEAP)
        await add_account(store, passwords, "ben", "agent", PASSWORD, queues=["benefits"], sip_uri="sip:ben@pbx")
        await live_call(store, "b1", with_form=True)
        entry = await store.enqueue("b1", "benefits", reason="complex_case", caller_id="+358401234567")
        app = make_app(store, CallMetrics(), auth=Auth(store, passwords=passwords))
        async with run_http(app, "127.0.0.1", 0) as endpoint, async_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            try:
                page = await browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(f"{endpoint.url}/agent")
                await page.fill("#username", "ben")
                await page.fill("#password", PASSWORD)
                await page.click("button[type=submit]")
                expect = async_api.expect
                await expect(page.locator("#next")).to_contain_text("complex_case", timeout=PAGE_WAIT_MS)
                assert MASKED in await page.locator("#next").inner_text()

                await page.click("text=Available")
                await expect(page.locator("#state")).to_have_text("available", timeout=PAGE_WAIT_MS)
                await page.click("text=Accept call")
                await expect(page.locator("#current")).to_contain_text("ringing your phone", timeout=PAGE_WAIT_MS)
                assert (await store.get_queue_entry(entry.entry_id)).agent == "ben"

                await store.mark_connected(entry.entry_id)  # the call worker, once the agent's phone has the caller
                await expect(page.locator("#current")).to_contain_text("connected to you", timeout=PAGE_WAIT_MS)
                await page.click("#reveal")
                await expect(page.locator("#revealed")).to_have_text(f"personal_id: {PID}", timeout=PAGE_WAIT_MS)

                await page.fill("#note", "explained the rent limits")
                await page.click("text=Done")
                await expect(page.locator("#next")).to_contain_text("Nobody is waiting", timeout=PAGE_WAIT_MS)
            finally:
                await browser.close()
        done = await store.get_queue_entry(entry.entry_id)
        agent = await store.get_agent("ben")
        audit = [(e.user, e.action, e.call_id) for e in await store.list_audit()]
    assert errors == []
    assert done.state == "done" and done.note == "explained the rent limits" and agent.state == "available"
    assert ("ben", UNMASK_ACTION, "b1") in audit
