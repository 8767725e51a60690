"""The supervisors' dashboard in a real headless browser (Debian's chromium, driven by Playwright) while a
synthesized caller is replayed into the service's queue by the real ``voicebot replay --server``.

A supervisor signs in; the caller asks for a person and waits; the waiting caller appears on the
dashboard without the page being reloaded (over its WebSocket); an agent in a second browser context
accepts the call in the agent view, and it leaves the queue on the supervisor's screen; the agent marks
it done; when the supervisor's login ends, the page goes to the login form. Screenshots of the dashboard are kept in test-artifacts/ (their paths are printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import AsyncIterator

import pytest
from argon2 import PasswordHasher

from tests.e2e.test_queue_replay import WAITING_CALLER
from voicebot.calls.report import CallReport
from voicebot.config import PROJECT_ROOT
from voicebot.metrics import CallMetrics
from voicebot.storage import SqliteCallStore
from voicebot.testing.callgen import build_call
from voicebot.web.accounts import add_account, issue_token
from voicebot.web.api import make_app
from voicebot.web.auth import SESSION_COOKIE, Auth, Passwords, secret_hash
from voicebot.web.dashboard import DASHBOARD, Dashboard, DashboardSettings
from voicebot.web.server import run_http

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
PASSWORD = "correct horse battery"
#: waits on the page: generous, for a loaded machine (the replay recognizes speech in real time first)
PAGE_WAIT_MS = 240_000


playwright_api = pytest.importorskip("playwright.async_api", reason="pip install playwright (the dev extras)")
expect = playwright_api.expect


@pytest.fixture
async def browser():
    if not CHROMIUM.exists():
        message = "Debian's chromium is not installed (make test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    print(f"dashboard screenshot: {path}")
    return path


async def sign_in(context, base_url: str, path: str, name: str):
    """A new page of ``context`` that opens ``path``, is sent to the login form, signs in and comes back."""
    page = await context.new_page()
    await page.goto(f"{base_url}{path}")
    assert page.url.startswith(f"{base_url}/login")
    await page.fill("#username", name)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base_url}{path}", timeout=PAGE_WAIT_MS)
    return page


@contextlib.asynccontextmanager
async def replayed(wav: Path, server: str, token: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """The real ``voicebot replay --server`` putting ``wav``'s caller in the service's queue (killed if left)."""
    replay = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicebot", "replay", "--json", "--server", server, "--stay", "120",
        "--caller-id", "0401234567", str(wav), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "VOICEBOT_ENGINE": "pocketsphinx", "VOICEBOT_API_TOKEN": token})
    try:
        yield replay
    finally:
        if replay.returncode is None:
            replay.kill()
            await replay.wait()


async def test_a_supervisor_watches_a_caller_wait_and_an_agent_in_another_browser_take_the_call(tmp_path: Path,
                                                                                               browser):
    wav = await asyncio.to_thread(build_call, WAITING_CALLER, tmp_path)
    async with SqliteCallStore(tmp_path / "voicebot.sqlite3") as store:
        passwords = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        await add_account(store, passwords, "sam", "supervisor", PASSWORD)
        await add_account(store, passwords, "alice", "agent", PASSWORD, queues=["general"],
                          sip_uri="sip:alice@agents.example.org")
        await store.set_agent_state("alice", "available")
        token, _ = await issue_token(store, "sam")
        app = make_app(store, CallMetrics(), auth=Auth(store, passwords=passwords))
        app[DASHBOARD] = Dashboard(store, DashboardSettings(recheck_s=1.0))  # logins re-checked every second
        async with run_http(app, "127.0.0.1", 0) as endpoint:
            supervisor = await browser.new_context(viewport={"width": 1400, "height": 1000})
            agent = await browser.new_context()
            errors: list[str] = []
            dashboard = await sign_in(supervisor, endpoint.url, "/dashboard", "sam")
            dashboard.on("pageerror", lambda e: errors.append(str(e)))
            await dashboard.wait_for_selector("body[data-live=open]", timeout=PAGE_WAIT_MS)
            assert await dashboard.text_content('[data-section="queue"]') == "Nobody is waiting."
            await dashboard.evaluate("window.sameDocument = 'yes'")  # gone if the page were ever reloaded
            queue = dashboard.locator('[data-section="queue"]')

            async with replayed(wav, endpoint.url, token) as replay:
                # the caller appears, waiting, with what the bot learned, while the page stays the same document
                row = queue.locator("tr.state-waiting")
                await row.wait_for(timeout=PAGE_WAIT_MS)
                [waiting] = await store.list_waiting("general")
                assert await row.get_attribute("data-call") == waiting.call_id
                assert (await row.locator("td.position").text_content()).strip() == "#1 in general"
                assert await row.locator("td.reason").text_content() == waiting.reason
                assert await row.locator("td.caller").text_content() == "040****567"
                card = dashboard.locator(f'[data-section="calls"] article.call[data-call="{waiting.call_id}"]')
                await card.wait_for(timeout=PAGE_WAIT_MS)
                assert "Welcome" in await card.locator("ol.transcript").text_content()
                await expect(dashboard.locator('[data-figure="transfers"] .value')).to_have_text(
                    "1", timeout=PAGE_WAIT_MS)
                assert await dashboard.evaluate("window.sameDocument") == "yes"
                await screenshot(dashboard, "dashboard-caller-waiting.png")

                # an agent in another browser accepts the call in the agent view; the caller leaves the line
                desk = await sign_in(agent, endpoint.url, "/agent", "alice")
                await desk.click("#next button[type=submit]", timeout=PAGE_WAIT_MS)
                await expect(desk.locator("#current h2")).to_contain_text("Your caller", timeout=PAGE_WAIT_MS)
                await row.wait_for(state="detached", timeout=PAGE_WAIT_MS)
                handled = queue.locator(f'tr[data-call="{waiting.call_id}"] td.position')
                await expect(handled).to_contain_text("to alice", timeout=PAGE_WAIT_MS)
                await expect(dashboard.locator('tr[data-agent="alice"] td.state')).to_have_text(
                    "busy", timeout=PAGE_WAIT_MS)
                out, err = await asyncio.wait_for(replay.communicate(), 300)
            assert replay.returncode == 0, err.decode()[-3000:]
            report = json.loads(out.decode().splitlines()[0])
            assert report["call_id"] == waiting.call_id and report["outcome"] == "transferred"
            entry = await store.get_queue_entry(waiting.entry_id)
            assert entry.state == "connected" and entry.agent == "alice"

            # the agent marks the call done: the queue is empty on the supervisor's screen, alice free again
            await expect(desk.locator("#current h2")).to_contain_text("connected to you", timeout=PAGE_WAIT_MS)
            await desk.fill("#note", "explained the housing allowance")
            await desk.click("#current button[type=submit]")
            await expect(queue).to_have_text("Nobody is waiting.", timeout=PAGE_WAIT_MS)
            await expect(dashboard.locator('tr[data-agent="alice"] td.state')).to_have_text(
                "available", timeout=PAGE_WAIT_MS)
            await dashboard.wait_for_selector(f'[data-section="calls"] article.call[data-call="{waiting.call_id}"]',
                                              state="detached", timeout=PAGE_WAIT_MS)
            assert (await store.get_queue_entry(waiting.entry_id)).state == "done"
            assert await dashboard.evaluate("window.sameDocument") == "yes"
            assert await dashboard.get_attribute("body", "data-live") == "open"
            shot = await screenshot(dashboard, "dashboard-after-agent.png")
            assert shot.stat().st_size > 10_000

            # the supervisor's login ends elsewhere (expired, signed out in another tab): the page goes to the form
            [cookie] = [c for c in await supervisor.cookies() if c["name"] == SESSION_COOKIE]
            assert await store.delete_session(secret_hash(cookie["value"]))
            await dashboard.wait_for_url(f"{endpoint.url}/login?next=/dashboard", timeout=PAGE_WAIT_MS)
            assert errors == []
            await agent.close()
            await supervisor.close()


async def test_the_page_reconnects_after_its_socket_drops_and_goes_to_the_login_form_once_refused(tmp_path: Path,
                                                                                                browser):
    async with SqliteCallStore(tmp_path / "voicebot.sqlite3") as store:
        passwords = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        await add_account(store, passwords, "sam", "supervisor", PASSWORD)
        app = make_app(store, CallMetrics(), auth=Auth(store, passwords=passwords))
        async with run_http(app, "127.0.0.1", 0) as endpoint:
            context = await browser.new_context()
            page = await sign_in(context, endpoint.url, "/dashboard", "sam")
            await page.wait_for_selector("body[data-live=open]", timeout=PAGE_WAIT_MS)
            await page.evaluate("window.sameDocument = 'yes'")
            first = int(await page.get_attribute("body", "data-updates"))

            await app[DASHBOARD].close_sockets()  # as when a service process stops: the page connects again
            await expect(page.locator("body")).not_to_have_attribute("data-updates", str(first), timeout=PAGE_WAIT_MS)
            await expect(page.locator("body")).to_have_attribute("data-live", "open", timeout=PAGE_WAIT_MS)
            await store.start_call(CallReport(call="sip:x", call_id="after-reconnect", caller_id="+358401234567"))
            await store.enqueue("after-reconnect", "general", reason="caller_request", caller_id="+358401234567")
            await expect(page.locator('[data-section="queue"] tr[data-call="after-reconnect"]')).to_have_count(
                1, timeout=PAGE_WAIT_MS)
            assert await page.evaluate("window.sameDocument") == "yes"

            # the login ends and the socket drops: the new socket is refused, and the page asks why
            [cookie] = [c for c in await context.cookies() if c["name"] == SESSION_COOKIE]
            assert await store.delete_session(secret_hash(cookie["value"]))
            await app[DASHBOARD].close_sockets()
            await page.wait_for_url(f"{endpoint.url}/login?next=/dashboard", timeout=PAGE_WAIT_MS)
            await context.close()
