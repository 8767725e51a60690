"""The supervisors' dashboard through aiohttp's test client over a real store: who may open it (and who may
not), what it shows (masked), its WebSocket updates from the store's change feed, and the exports."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from aiohttp import WSMsgType, WSServerHandshakeError

from tests.integration.test_web_auth import (  # noqa: F401 (fixtures)
    CHEAP, MASKED, PASSWORD, PID, POLICY, SPOKEN, bearer, calls, clock, logged_in, passwords, store, ticks, users,
)
from tests.store_backends import make_store
from voicebot.calls.report import CallReport, Turn
from voicebot.events import IntakeForm
from voicebot.metrics import CallMetrics
from voicebot.web.accounts import add_account, issue_token
from voicebot.web.api import make_app
from voicebot.web.auth import CSRF_HEADER, Auth, Passwords
from voicebot.web.dashboard import CLOSE_LOGIN_GONE, DASHBOARD, RESYNC, Client, Dashboard, DashboardSettings

HELSINKI = ZoneInfo("Europe/Helsinki")
#: a socket that says nothing for this long has failed the test (a guard, not a timing claim)
GUARD_S = 30
PHONE = "+358401234567"
PHONE_MASKED = "+358******567"

PAGES = ["/dashboard", "/dashboard/static/dashboard.js", "/dashboard/static/dashboard.css",
         "/dashboard/applications/c-benefits"]
API = ["/api/dashboard", "/api/dashboard/figures", "/api/applications/export.csv", "/api/applications/export.json",
       "/api/applications/c-benefits"]


def dashboard_app(store, clock, ticks, passwords, **settings):
    app = make_app(store, CallMetrics(), auth=Auth(store, POLICY, now=clock, passwords=passwords,
                                                   throttle_clock=ticks))
    app[DASHBOARD] = Dashboard(store, DashboardSettings(now=clock, tz=HELSINKI, **settings))
    return app


@pytest.fixture
def app(store, clock, ticks, passwords):
    return dashboard_app(store, clock, ticks, passwords, recheck_s=0.2)


@pytest.fixture
async def client(loop_guard, aiohttp_client, app):
    return await aiohttp_client(app)


def origin(client) -> dict:
    return {"Origin": str(client.make_url("/")).rstrip("/")}


async def receive(ws) -> dict:
    msg = await asyncio.wait_for(ws.receive(), GUARD_S)
    assert msg.type == WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def until_message(ws, wanted) -> dict:
    """The first message ``wanted(message)`` accepts (earlier ones were other sections' updates)."""
    async with asyncio.timeout(GUARD_S):
        while True:
            message = await receive(ws)
            if wanted(message):
                return message


async def until_each(ws, *wanted) -> list[dict]:
    """For each of ``wanted``, the first message it accepts, whatever order they come in."""
    found: list[dict | None] = [None] * len(wanted)
    async with asyncio.timeout(GUARD_S):
        while None in found:
            message = await receive(ws)
            for i, accepts in enumerate(wanted):
                if found[i] is None and accepts(message):
                    found[i] = message
    return found  # type: ignore[return-value]


def section(name):
    return lambda m: m["type"] == "section" and m["name"] == name


async def live_call(store, call_id: str, caller: str = PHONE, turns=()) -> CallReport:
    report = CallReport(call=f"sip:{call_id}", call_id=call_id, caller_id=caller,
                        started_at="2026-11-28T10:00:00+00:00")
    await store.start_call(report)
    if turns:
        await store.save_progress(call_id, dict(enumerate(turns)), [])
    return report


# ---------------------------------------------------------------------- refused access


@pytest.mark.parametrize("path", PAGES)
async def test_a_dashboard_page_without_a_login_sends_the_browser_to_the_login_form(client, users, calls, path):
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("path", API)
async def test_a_dashboard_api_without_a_login_or_with_a_bad_token_is_refused(client, users, calls, path):
    resp = await client.get(path)
    assert resp.status == 401 and "login needed" in (await resp.json())["error"]
    resp = await client.get(path, headers=bearer("vbt_not-a-token"))
    assert resp.status == 401


@pytest.mark.parametrize("path", PAGES + API)
async def test_agents_may_not_open_the_dashboard(client, store, users, calls, path):
    await logged_in(client, "ben")
    assert (await client.get(path)).status == 403
    token, _ = await issue_token(store, "gail")
    assert (await client.get(path, headers=bearer(token))).status == 403


@pytest.mark.parametrize("path", PAGES + API)
async def test_a_supervisor_opens_every_dashboard_route_by_session_and_by_token(client, store, users, calls, path):
    await logged_in(client, "sam")
    assert (await client.get(path)).status == 200
    token, _ = await issue_token(store, "sam")
    client.session.cookie_jar.clear()
    assert (await client.get(path, headers=bearer(token))).status == 200


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/ws", "/api/dashboard", "/api/applications/export.csv"])
async def test_a_post_to_the_dashboard_without_the_csrf_token_is_refused_before_anything_else(client, users, path):
    csrf = await logged_in(client, "sam")
    resp = await client.post(path)
    assert resp.status == 403 and "CSRF" in await resp.text()
    assert (await client.post(path, headers={CSRF_HEADER: csrf})).status == 405  # the dashboard only reads


async def test_the_websocket_refuses_no_login_another_sites_page_an_agent_and_a_bad_token(client, store, users):
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect("/dashboard/ws", headers=bearer("vbt_not-a-token"))
    assert refused.value.status == 401
    await logged_in(client, "ben")
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect("/dashboard/ws", headers=origin(client))
    assert refused.value.status == 403
    client.session.cookie_jar.clear()
    await logged_in(client, "sam")
    for headers in ({"Origin": "http://evil.example"}, {}):
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect("/dashboard/ws", headers=headers)
        assert refused.value.status == 403
    async with client.ws_connect("/dashboard/ws", headers=origin(client)) as ws:
        assert (await receive(ws))["type"] == "snapshot"
    client.session.cookie_jar.clear()
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect("/dashboard/ws", headers=origin(client))
    assert refused.value.request_info.url.path == "/login"  # sent to the login form, as a page would be


async def test_a_supervisors_token_opens_the_websocket_from_a_program_without_an_origin(client, store, users):
    token, _ = await issue_token(store, "sam")
    async with client.ws_connect("/dashboard/ws", headers=bearer(token)) as ws:
        assert (await receive(ws))["type"] == "snapshot"
    agent, _ = await issue_token(store, "ben")
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect("/dashboard/ws", headers=bearer(agent))
    assert refused.value.status == 403


async def test_a_socket_is_closed_once_its_login_is_gone(client, users):
    await logged_in(client, "sam")
    async with client.ws_connect("/dashboard/ws", headers=origin(client)) as ws:
        assert (await receive(ws))["type"] == "snapshot"
        csrf = (await (await client.get("/api/me")).json())["csrf_token"]
        assert (await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)).status == 303
        async with asyncio.timeout(GUARD_S):
            while (msg := await ws.receive()).type == WSMsgType.TEXT:
                pass  # an update sent before the check
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED) and ws.close_code == CLOSE_LOGIN_GONE


async def test_a_login_form_stays_good_when_the_browser_loads_the_login_page_again_meanwhile(client, users):
    """A browser's own /favicon.ico request is redirected to /login too: that must not make the open form stale."""
    first = await client.get("/dashboard")  # to the login form
    token = re.search(r'name="csrf_token" value="([^"]+)"', await first.text()).group(1)
    again = await client.get("/favicon.ico")
    assert again.url.path == "/login" and token in await again.text()
    resp = await client.post("/login", data={"username": "sam", "password": PASSWORD, "csrf_token": token,
                                             "next": "/dashboard"}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/dashboard"
    client.session.cookie_jar.clear()
    resp = await client.post("/login", data={"username": "sam", "password": PASSWORD, "csrf_token": token,
                                             "next": "/dashboard"}, allow_redirects=False)
    assert resp.status == 403  # without the cookie the form's token is worthless


async def test_a_plain_get_of_the_socket_is_a_bad_request(client, users):
    await logged_in(client, "sam")
    assert (await client.get("/dashboard/ws")).status == 400


# ---------------------------------------------------------------------- what the page shows


async def test_the_page_shows_every_section_masked_and_escaped_under_a_strict_policy(client, store, users, calls):
    await live_call(store, "live-1", turns=[Turn("bot", "Please say your code.", 0.0, 1.0),
                                            Turn("caller", SPOKEN, 1.5, 4.0),
                                            Turn("caller", f"<script>alert(1)</script> {PID}", 5.0, 6.0)])
    await store.enqueue("live-1", "general", reason="<b>not_understood</b>", caller_id=PHONE)
    await store.save_agent("ben", "sip:ben@pbx", ["benefits"])
    await store.request_callback("c-general", "general", "0401234567")
    await logged_in(client, "sam")
    resp = await client.get("/dashboard")
    page = await resp.text()
    policy = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
    for title in ("Today", "Queue", "Calls with the bot", "Agents", "Callbacks", "Applications"):
        assert f">{title}</h2>" in page
    assert PID not in page and "one three six" not in page and PHONE not in page and "0401234567" not in page
    assert MASKED in page and PHONE_MASKED in page and "040****567" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;not_understood&lt;/b&gt;" in page and "<b>not_understood" not in page
    assert page.count("<script") == 1 and '<script src="/dashboard/static/dashboard.js" defer>' in page
    assert 'name="csrf_token"' in page  # the sign-out form


async def test_the_snapshot_api_gives_the_sections_data_masked(client, store, clock, users, calls):
    await live_call(store, "waiting-1", turns=[Turn("caller", "I want to speak to a person", 0.0, 2.0,
                                                    intent="agent")])
    clock.now = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)
    await store.enqueue("waiting-1", "general", reason="caller_request", caller_id=PHONE)
    await store.enqueue("c-benefits", "benefits", reason="complex_case", caller_id=PHONE)
    clock.now = datetime(2026, 11, 28, 10, 2, 5, tzinfo=timezone.utc)
    token, _ = await issue_token(store, "sam")
    data = await (await client.get("/api/dashboard", headers=bearer(token))).json()
    assert set(data) == {"now", "figures", "queue", "calls", "agents", "callbacks", "applications"}
    waiting = {row["call_id"]: row for row in data["queue"]}
    assert waiting["waiting-1"]["position"] == 1 and waiting["waiting-1"]["wait_s"] == 125.0
    assert waiting["waiting-1"]["caller"] == PHONE_MASKED
    assert waiting["waiting-1"]["context"]["intents"] == ["agent"]
    assert waiting["waiting-1"]["context"]["last_caller_words"] == "I want to speak to a person"
    assert waiting["c-benefits"]["context"]["fields"] == {"personal_id": MASKED}
    assert [c["call_id"] for c in data["calls"]] == ["waiting-1"]
    assert data["figures"]["transfers_by_reason"] == {"complex_case": 1, "asked_for_agent": 1, "caller_request": 1}
    assert PID not in json.dumps(data) and PHONE not in json.dumps(data)


async def test_figures_for_a_day_and_a_bad_day(client, store, users, calls):
    token, _ = await issue_token(store, "sam")
    figures = await (await client.get("/api/dashboard/figures?day=2026-11-28", headers=bearer(token))).json()
    assert (figures["calls"], figures["contained"], figures["transfers"]) == (3, 1, 2)
    assert figures["since"] == "2026-11-28T00:00:00+02:00" and len(figures["hours"]) == 24
    other = await (await client.get("/api/dashboard/figures?day=2026-11-27", headers=bearer(token))).json()
    assert other["calls"] == 0
    resp = await client.get("/api/dashboard/figures?day=yesterday", headers=bearer(token))
    assert resp.status == 400 and "YYYY-MM-DD" in (await resp.json())["error"]


# ---------------------------------------------------------------------- live over the socket


async def test_the_socket_sends_a_snapshot_then_the_queue_as_it_changes(client, store, clock, users):
    await live_call(store, "q-1")
    await store.save_agent("gail", "sip:gail@pbx", ["general"])
    await logged_in(client, "sam")
    async with client.ws_connect("/dashboard/ws", headers=origin(client)) as ws:
        snapshot = await receive(ws)
        assert snapshot["type"] == "snapshot" and snapshot["sections"]["queue"]["data"] == []
        assert "Nobody is waiting" in snapshot["sections"]["queue"]["html"]

        entry = await store.enqueue("q-1", "general", reason="caller_request", caller_id=PHONE)
        queue = await until_message(ws, lambda m: section("queue")(m) and m["data"])
        [row] = queue["data"]
        assert (row["entry_id"], row["position"], row["reason"], row["state"]) == (
            entry.entry_id, 1, "caller_request", "waiting")
        assert f'data-entry="{entry.entry_id}"' in queue["html"] and PHONE_MASKED in queue["html"]

        await store.take_next("gail", ["general"])
        queue = await until_message(ws, lambda m: section("queue")(m) and m["data"][0]["state"] != "waiting")
        assert [(r["state"], r["agent"], r["position"]) for r in queue["data"]] == [("connecting", "gail", None)]
        agents = await until_message(ws, section("agents"))
        assert {a["name"]: a["call_id"] for a in agents["data"]} == {"ben": None, "gail": "q-1"}

        await store.mark_connected(entry.entry_id)
        await store.finish(entry.entry_id)
        queue = await until_message(ws, lambda m: section("queue")(m) and not m["data"])
        assert "Nobody is waiting" in queue["html"]


async def test_the_socket_sends_a_calls_transcript_as_it_happens_masked_and_drops_it_at_the_end(client, store,
                                                                                                users):
    await logged_in(client, "sam")
    async with client.ws_connect("/dashboard/ws", headers=origin(client)) as ws:
        await receive(ws)
        report = await live_call(store, "talk-1")
        card = await until_message(ws, lambda m: m["type"] == "call" and m["call_id"] == "talk-1")
        assert card["data"]["turns"] == [] and 'data-call="talk-1"' in card["html"]
        await store.save_progress("talk-1", {0: Turn("bot", "Please say your personal identity code.", 0.0, 2.0),
                                             1: Turn("caller", SPOKEN, 2.5, 5.0)}, [])
        card = await until_message(ws, lambda m: m["type"] == "call" and len((m["data"] or {}).get("turns", [])) == 2)
        assert card["data"]["turns"][1]["text"] == "two nine zero two eight eight dash *** dee"
        assert "one three six" not in card["html"]

        report.outcome = "completed"
        await store.end_call(report)
        gone, figures = await until_each(
            ws, lambda m: m["type"] == "call" and m["call_id"] == "talk-1" and m["html"] is None, section("figures"))
        assert gone["data"] is None and figures["data"]["contained"] == 1


async def test_the_socket_sends_callbacks_agents_and_applications_as_they_change(client, store, users):
    token, _ = await issue_token(store, "sam")
    await live_call(store, "form-1")
    async with client.ws_connect("/dashboard/ws", headers=bearer(token)) as ws:
        await receive(ws)
        callback = await store.request_callback("form-1", "general", "0401234567")
        callbacks = await until_message(ws, lambda m: section("callbacks")(m) and m["data"])
        assert [(c["callback_id"], c["number"], c["state"]) for c in callbacks["data"]] == [
            (callback.callback_id, "040****567", "open")]
        assert "0401234567" not in callbacks["html"]
        await store.claim_callback(callback.callback_id, "gail")
        await store.close_callback(callback.callback_id, "done")
        callbacks = await until_message(ws, lambda m: section("callbacks")(m) and not m["data"])
        assert "No callbacks to make." in callbacks["html"]

        await store.set_agent_state("gail", "available")
        agents = await until_message(ws, section("agents"))
        assert {a["name"]: a["state"] for a in agents["data"]} == {"ben": "away", "gail": "available"}

        await store.save_intake("form-1", IntakeForm("housing_allowance", "incomplete", {"personal_id": PID}))
        applications = await until_message(ws, lambda m: section("applications")(m) and m["data"])
        assert [(a["call_id"], a["status"], a["fields"]) for a in applications["data"]] == [
            ("form-1", "incomplete", {"personal_id": MASKED})]
        assert PID not in applications["html"] and "/dashboard/applications/form-1" in applications["html"]


async def test_a_change_made_by_another_process_reaches_the_socket(loop_guard, aiohttp_client, store_url, clock,
                                                                   ticks):
    """Another store on the same database stands for another service process (SQLite's change log,
    PostgreSQL's NOTIFY): the dashboard of this one shows what that one did."""
    async with make_store(store_url, now=clock, poll_interval_s=0.05) as store:
        passwords = Passwords(CHEAP)
        await add_account(store, passwords, "sam", "supervisor", "correct horse battery")
        token, _ = await issue_token(store, "sam")
        client = await aiohttp_client(dashboard_app(store, clock, ticks, passwords))
        async with make_store(store_url, now=clock, recover=False) as other:
            async with client.ws_connect("/dashboard/ws", headers=bearer(token)) as ws:
                await receive(ws)
                await live_call(other, "elsewhere", turns=[Turn("caller", "hello from elsewhere", 0.0, 1.0)])
                card = await until_message(ws, lambda m: m["type"] == "call" and m["call_id"] == "elsewhere"
                                           and m["data"] and m["data"]["turns"])
                assert card["data"]["turns"][0]["text"] == "hello from elsewhere"
                await other.enqueue("elsewhere", "general", reason="caller_request")
                queue = await until_message(ws, lambda m: section("queue")(m) and m["data"])
                assert queue["data"][0]["call_id"] == "elsewhere"
        await client.close()


async def test_a_burst_of_changes_is_sent_as_few_messages_and_ends_in_the_final_state(client, store, users):
    token, _ = await issue_token(store, "sam")
    for i in range(30):
        await live_call(store, f"burst-{i}")
    async with client.ws_connect("/dashboard/ws", headers=bearer(token)) as ws:
        await receive(ws)
        for i in range(30):
            await store.enqueue(f"burst-{i}", "general", reason="caller_request")
        queue = await until_message(ws, lambda m: section("queue")(m) and len(m["data"]) == 30)
        assert [r["position"] for r in queue["data"]] == list(range(1, 31))


async def test_stopping_the_service_closes_open_sockets_at_once(loop_guard, aiohttp_client, store, clock, ticks,
                                                                passwords, users):
    client = await aiohttp_client(dashboard_app(store, clock, ticks, passwords))
    token, _ = await issue_token(store, "sam")
    ws = await client.ws_connect("/dashboard/ws", headers=bearer(token))
    await receive(ws)
    async with asyncio.timeout(GUARD_S):  # aiohttp would wait 60 s for an open socket before cancelling it
        await client.server.close()
        msg = await ws.receive()
    assert msg.type == WSMsgType.CLOSE and msg.data == 1001  # going away
    await client.close()


def test_a_browser_too_far_behind_gets_a_snapshot_instead_of_the_backlog():
    client = Client(ws=None, backlog=3)  # type: ignore[arg-type]
    assert client.outbox.get_nowait() is RESYNC  # a new socket gets a snapshot first
    for i in range(5):
        client.offer(f"update {i}")
    queued = [client.outbox.get_nowait() for _ in range(client.outbox.qsize())]
    assert queued == [RESYNC, "update 4"]


# ---------------------------------------------------------------------- applications: detail and exports


@pytest.fixture
async def applications(store, calls):
    """c-benefits has an incomplete form (with a code); add a submitted one from a caller whose number and
    fields would run as formulas in a spreadsheet."""
    report = CallReport(call="sip:sub", call_id="c-submitted", caller_id=PHONE, started_at="2026-11-28T11:00:00+00:00")
    await store.start_call(report)
    fields = {"personal_id": PID, "postal_code": "00100", "monthly_rent": "=HYPERLINK(\"http://evil\")"}
    reference = await store.submit_intake("c-submitted", IntakeForm("housing_allowance", "submitted", fields))
    report.intake = IntakeForm("housing_allowance", "submitted", fields, reference)
    report.outcome = "completed"
    await store.end_call(report)
    return reference


async def test_the_csv_export_is_masked_and_safe_to_open_in_a_spreadsheet(client, store, users, applications):
    token, _ = await issue_token(store, "sam")
    resp = await client.get("/api/applications/export.csv", headers=bearer(token))
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="applications-20261128.csv"'
    text = await resp.text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["call_id"] for r in rows] == ["c-submitted", "c-benefits"]
    submitted = rows[0]
    assert submitted["reference"] == applications and submitted["status"] == "submitted"
    assert submitted["personal_id"] == MASKED and submitted["caller"] == "'" + PHONE_MASKED
    assert submitted["monthly_rent"].startswith("'=") and submitted["postal_code"] == "00100"
    assert PID not in text and PHONE not in text

    only = await client.get("/api/applications/export.csv?status=submitted", headers=bearer(token))
    assert [r["call_id"] for r in csv.DictReader(io.StringIO(await only.text()))] == ["c-submitted"]
    bad = await client.get("/api/applications/export.csv?status=all", headers=bearer(token))
    assert bad.status == 400


async def test_the_json_export_and_the_detail_are_masked(client, store, users, applications):
    token, _ = await issue_token(store, "sam")
    resp = await client.get("/api/applications/export.json?status=incomplete", headers=bearer(token))
    assert resp.headers["Content-Disposition"] == 'attachment; filename="applications-incomplete-20261128.json"'
    data = await resp.json()
    assert [a["call_id"] for a in data["applications"]] == ["c-benefits"]
    assert data["applications"][0]["fields"] == {"personal_id": MASKED}

    detail = await (await client.get("/api/applications/c-benefits", headers=bearer(token))).json()
    assert detail["status"] == "incomplete" and detail["caller"] == PHONE_MASKED
    assert [t["text"] for t in detail["turns"]][1] == "two nine zero two eight eight dash *** dee"
    assert PID not in json.dumps(detail)
    assert (await client.get("/api/applications/c-bot", headers=bearer(token))).status == 404

    await logged_in(client, "sam")
    page = await (await client.get("/dashboard/applications/c-submitted")).text()
    assert applications in page and MASKED in page and PID not in page
    assert "=HYPERLINK(&quot;http://evil&quot;)" in page
    assert (await client.get("/dashboard/applications/nope")).status == 404
