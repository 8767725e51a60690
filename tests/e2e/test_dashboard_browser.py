"""The supervisors' dashboard in a real headless browser (Debian's chromium, driven by Playwright) while the
real service (`voicebot serve` as a process) answers a real SIP caller (Debian's baresip).

A supervisor signs in; the caller presses 0 (an RFC 4733 key, so no speech recognition luck) and waits
in the queue; the waiting caller appears on the dashboard without the page being reloaded (over its
WebSocket); an agent in a second browser context accepts the call in the agent view, the agent's own
baresip phone receives the call from that caller (REFER), and the caller leaves the queue on the
supervisor's screen; the agent marks it done; when the supervisor signs out in another tab, the page goes
to the login form. Screenshots of the dashboard are kept in test-artifacts/ (their paths are printed).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from tests.e2e.baresip_agent import BaresipAgent, running
from tests.e2e.service_process import USER_PASSWORD
from tests.e2e.test_agents import ask_for_a_person, service
from tests.e2e.test_serve import wait_for
from tests.e2e.test_sip_front import incoming
from voicebot.calls.report import CallReport
from voicebot.config import PROJECT_ROOT
from voicebot.metrics import CallMetrics
from voicebot.storage import SqliteCallStore
from voicebot.web.accounts import add_account
from voicebot.web.api import make_app
from voicebot.web.auth import SESSION_COOKIE, Auth, Passwords, secret_hash
from voicebot.web.dashboard import DASHBOARD
from voicebot.web.server import run_http

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
PASSWORD = USER_PASSWORD
#: waits on the page: generous, for a loaded machine (a dashboard socket re-checks its login after 30 s idle)
PAGE_WAIT_MS = 240_000
#: the caller's number (its SIP user): the dashboard shows it masked
CALLER_NUMBER = "0401234567"
#: the phones' calls last at most this long (their silent microphones end): more than the waits above need
PHONE_SILENT_S = 600


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


async def just_refreshed(desk) -> None:
    """Until the agent view has just reloaded itself (it does every few seconds while nothing is typed): what
    is done next lands on the page that shows, not on one a reload already under way is about to replace."""
    await desk.wait_for_event("load", timeout=PAGE_WAIT_MS)


async def test_a_supervisor_watches_a_sip_caller_wait_and_an_agent_in_another_browser_put_it_through_to_their_phone(
        tmp_path: Path, browser):
    caller = BaresipAgent(tmp_path / "caller", user=CALLER_NUMBER, mic=None, silent_s=PHONE_SILENT_S)
    phone = BaresipAgent(tmp_path / "anna-phone", user="anna", mic=None, auto_answer=True, silent_s=PHONE_SILENT_S)
    svc = service(tmp_path, phone)  # REFER: the caller's side calls the agent's phone
    try:
        await svc.start()
        await svc.user_token("sam", "supervisor")
        await svc.user_token("anna", "agent", "--queues", "general", "--sip-uri", phone.uri)
        async with running(caller, phone):
            supervisor = await browser.new_context(viewport={"width": 1400, "height": 1000})
            agent = await browser.new_context()
            errors: list[str] = []
            dashboard = await sign_in(supervisor, svc.api_url, "/dashboard", "sam")
            dashboard.on("pageerror", lambda e: errors.append(str(e)))
            await dashboard.wait_for_selector("body[data-live=open]", timeout=PAGE_WAIT_MS)
            queue = dashboard.locator('[data-section="queue"]')
            assert await queue.text_content() == "Nobody is waiting."
            await dashboard.evaluate("window.sameDocument = 'yes'")  # gone if the page were ever reloaded

            # the caller presses 0 and waits: they appear with what the bot learned, in the same document
            waiting = await ask_for_a_person(svc, caller)
            row = queue.locator(f'tr.state-waiting[data-call="{waiting["call_id"]}"]')
            await row.wait_for(timeout=PAGE_WAIT_MS)
            assert (await row.locator("td.position").text_content()).strip() == "#1 in general"
            assert await row.locator("td.reason").text_content() == waiting["reason"] == "caller_request"
            assert await row.locator("td.caller").text_content() == "040****567"
            card = dashboard.locator(f'[data-section="calls"] article.call[data-call="{waiting["call_id"]}"]')
            await expect(card.locator("ol.transcript")).to_contain_text("Welcome", timeout=PAGE_WAIT_MS)
            await expect(dashboard.locator('[data-figure="transfers"] .value')).to_have_text("1", timeout=PAGE_WAIT_MS)
            assert await dashboard.evaluate("window.sameDocument") == "yes"
            await screenshot(dashboard, "dashboard-caller-waiting.png")
            assert [e.type for e in phone.events if e.type.startswith("CALL_")] == []  # nothing rang before an accept

            # an agent in another browser sets herself available and accepts the call in the agent view
            desk = await sign_in(agent, svc.api_url, "/agent", "anna")
            await desk.click("#desk button[name=state][value=available]", timeout=PAGE_WAIT_MS)
            await expect(desk.locator("#state")).to_have_text("available", timeout=PAGE_WAIT_MS)
            await expect(desk.locator("#next")).to_contain_text("caller_request", timeout=PAGE_WAIT_MS)
            await just_refreshed(desk)
            await desk.click("#next button[type=submit]", timeout=PAGE_WAIT_MS)
            await expect(desk.locator("#current h2")).to_contain_text("Your caller", timeout=PAGE_WAIT_MS)

            # the agent's phone rings with this caller, and the caller leaves the line on the supervisor's screen
            rang = await phone.wait_event("CALL_ESTABLISHED", PAGE_WAIT_MS / 1000)  # it answers by itself
            await row.wait_for(state="detached", timeout=PAGE_WAIT_MS)
            handled = queue.locator(f'tr[data-call="{waiting["call_id"]}"] td.position')
            await expect(handled).to_have_text("connected to anna", timeout=PAGE_WAIT_MS)
            await expect(dashboard.locator('tr[data-agent="anna"] td.state')).to_have_text("busy", timeout=PAGE_WAIT_MS)
            await expect(desk.locator("#current h2")).to_contain_text("connected to you", timeout=PAGE_WAIT_MS)
            await screenshot(dashboard, "dashboard-caller-with-agent.png")
            assert incoming(phone) == 1

            # the agent marks the call done: the queue is empty on the supervisor's screen, anna free again
            await just_refreshed(desk)
            await desk.fill("#note", "explained the housing allowance")
            await desk.click("#current button[type=submit]")
            await expect(queue).to_have_text("Nobody is waiting.", timeout=PAGE_WAIT_MS)
            await expect(dashboard.locator('tr[data-agent="anna"] td.state')).to_have_text(
                "available", timeout=PAGE_WAIT_MS)
            assert not phone.closed()  # the agent is still talking to the caller
            await caller.hangup()
            await phone.wait_event("CALL_CLOSED", PAGE_WAIT_MS / 1000)
            await card.wait_for(state="detached", timeout=PAGE_WAIT_MS)
            assert await dashboard.evaluate("window.sameDocument") == "yes"
            assert await dashboard.get_attribute("body", "data-live") == "open"
            shot = await screenshot(dashboard, "dashboard-after-agent.png")
            assert shot.stat().st_size > 10_000

            async def ended():
                record = await svc.get(f"/api/calls/{waiting['call_id']}")
                return record if record["status"] == "ended" else None

            record = await wait_for(ended, 60, "the call to end", lambda: svc.log()[-3000:])
            [entry] = (await svc.get("/api/queue?state=done"))["entries"]

            # the supervisor signs out in another tab: the socket's next login check closes it, the page goes to the form
            other = await supervisor.new_page()
            await other.goto(f"{svc.api_url}/dashboard")
            await other.click("text=Sign out")
            await dashboard.wait_for_url(f"{svc.api_url}/login?next=/dashboard", timeout=PAGE_WAIT_MS)
            assert errors == []
            await agent.close()
            await supervisor.close()
    finally:
        await svc.stop()
    # REFER: the agent's phone is called by the caller's own phone, not by the service
    assert rang.data["direction"] == "incoming" and rang.data["peeruri"].startswith(f"sip:{CALLER_NUMBER}@"), rang.data
    assert (entry["call_id"], entry["agent"], entry["note"]) == (waiting["call_id"], "anna",
                                                                  "explained the housing allowance")
    assert record["outcome"] == "transferred" and record["transfer"]["reason"] == "caller_request"


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
