"""Logins, roles, CSRF, API tokens and personal data on the web side, through aiohttp's test client
over a real SQLite store; the clocks of the store, the sessions and the guessing brake are moved by the test."""

from __future__ import annotations

import html
import re
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web
from argon2 import PasswordHasher

from tests.unit.test_store_queue import START, Clock  # the store's test clock, moved by the test
from voicebot.calls.report import CallReport, Turn
from voicebot.events import IntakeForm, Transfer
from voicebot.metrics import CallMetrics
from voicebot.privacy import mask_personal_id
from voicebot.storage import SqliteCallStore
from voicebot.web.accounts import add_account, disable_account, issue_token, revoke_token
from voicebot.web.api import UNMASK_ACTION, UNMASK_REFUSED_ACTION, make_app
from voicebot.web.pages import LOGIN_CSRF_COOKIE
from voicebot.web.auth import (
    CSRF_HEADER, SESSION_COOKIE, Auth, AuthPolicy, LoginThrottle, Passwords, secret_hash,
)

PASSWORD = "correct horse battery"
PID = "290288-136D"
MASKED = "290288-***D"
SPOKEN = "two nine zero two eight eight dash one three six dee"
POLICY = AuthPolicy(session_lifetime_s=3600, free_failures=3, first_delay_s=10, max_delay_s=60,
                    failure_window_s=600)


class Ticks:
    """The guessing brake's monotonic clock."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


#: argon2id made cheap for the tests' many logins; the service uses the library's defaults (tested below)
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def passwords() -> Passwords:
    return Passwords(CHEAP)


@pytest.fixture
async def store(tmp_path: Path, clock):
    async with SqliteCallStore(tmp_path / "voicebot.sqlite3", now=clock) as s:
        yield s


@pytest.fixture
def app(store, clock, ticks, passwords) -> web.Application:
    return make_app(store, CallMetrics(), auth=Auth(store, POLICY, now=clock, passwords=passwords,
                                                    throttle_clock=ticks))


@pytest.fixture
async def client(loop_guard, aiohttp_client, app):
    """Asks for loop_guard first so the guard checks for leaks after the client has closed."""
    return await aiohttp_client(app)


@pytest.fixture
async def users(store, passwords):
    """A supervisor, an agent of the benefits queue and an agent of general."""
    await add_account(store, passwords, "sam", "supervisor", PASSWORD)
    await add_account(store, passwords, "ben", "agent", PASSWORD, queues=["benefits"], sip_uri="sip:ben@pbx")
    await add_account(store, passwords, "gail", "agent", PASSWORD, queues=["general"], sip_uri="sip:gail@pbx")


@pytest.fixture
async def calls(store):
    """A call transferred to benefits that gave its code, one transferred to general, one the bot handled."""
    await record_call(store, "c-benefits", Transfer("complex_case", "benefits"), form={"personal_id": PID})
    await record_call(store, "c-general", Transfer("asked_for_agent", "general"))
    await record_call(store, "c-bot", None)


async def record_call(store, call_id: str, transfer: Transfer | None, form: dict | None = None) -> None:
    report = CallReport(call=f"sip:{call_id}", call_id=call_id, caller_id="+358401234567",
                        started_at="2026-11-28T10:00:00+00:00")
    await store.start_call(report)
    report.turns = [Turn("bot", "Please say your personal identity code.", 0.0, 2.0),
                    Turn("caller", SPOKEN, 3.0, 6.0),
                    Turn("bot", "Let me read that back. personal identity code: 2 9 0 2 8 8, dash, 1 3 6, D.", 7.0, 9.0),
                    Turn("caller", f"it is {PID}", 10.0, 11.0)]
    if form is not None:
        report.intake = IntakeForm("housing_allowance", "incomplete", form)
    report.outcome = "transferred" if transfer else "completed"
    report.transfer = transfer
    report.ended_at, report.duration_s = "2026-11-28T10:01:00+00:00", 60.0
    await store.end_call(report)


async def login(client, name: str, password: str = PASSWORD, *, next_path: str | None = None,
                form_path: str = "/login") -> web.ClientResponse:
    """Open the login page (``form_path``), then post its form as a browser would (cookies kept by the
    client); ``next_path`` replaces the page the form itself sends the browser back to."""
    form_page = await (await client.get(form_path, allow_redirects=False)).text()
    token = re.search(r'name="csrf_token" value="([^"]+)"', form_page).group(1)
    if next_path is None:
        next_path = html.unescape(re.search(r'name="next" value="([^"]*)"', form_page).group(1))
    return await client.post("/login", data={"username": name, "password": password, "csrf_token": token,
                                             "next": next_path}, allow_redirects=False)


async def logged_in(client, name: str) -> str:
    """Log ``name`` in; the session's CSRF token."""
    resp = await login(client, name)
    assert resp.status == 303, await resp.text()
    return (await (await client.get("/api/me")).json())["csrf_token"]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


API = [("GET", "/api/me"), ("GET", "/api/calls"), ("GET", "/api/calls/c-benefits"),
       ("POST", "/api/calls/c-benefits/personal-id"), ("GET", "/api/applications"), ("GET", "/api/audit"),
       ("GET", "/api/no-such-thing")]


# ---------------------------------------------------------------------- nothing without a login


@pytest.mark.parametrize("method, path", API)
async def test_every_api_endpoint_refuses_a_request_without_a_login(client, calls, method, path):
    resp = await client.request(method, path)
    assert resp.status == 401 and resp.content_type == "application/json"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert "login needed" in (await resp.json())["error"]


async def test_a_page_without_a_login_redirects_to_the_login_form_and_back(client, users):
    resp = await client.get("/?tab=queue", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login?next=/?tab%3Dqueue"
    resp = await login(client, "sam", next_path="/?tab=queue")
    assert resp.status == 303 and resp.headers["Location"] == "/?tab=queue"
    assert "Signed in as <strong>sam</strong> (supervisor)" in await (await client.get("/")).text()


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"])
async def test_login_never_sends_the_browser_to_another_site(client, users, target):
    resp = await login(client, "sam", next_path=target)
    assert resp.status == 303 and resp.headers["Location"] == "/dashboard"


@pytest.mark.parametrize("name, home", [("ben", "/agent"), ("sam", "/dashboard")])
async def test_signing_in_with_no_page_to_return_to_lands_on_the_page_the_role_works_in(client, users, name, home):
    resp = await login(client, name)
    assert resp.status == 303 and resp.headers["Location"] == home
    resp = await client.get(home, allow_redirects=False)
    assert resp.status == 200, await resp.text()


async def test_a_page_the_login_form_was_sent_from_still_wins_over_the_role_s_home(client, users):
    resp = await login(client, "ben", form_path="/login?next=/api/me")
    assert resp.status == 303 and resp.headers["Location"] == "/api/me"


@pytest.mark.parametrize("name, home", [("ben", "/agent"), ("sam", "/dashboard")])
async def test_opening_the_login_form_when_signed_in_goes_to_the_role_s_home(client, users, name, home):
    assert (await login(client, name)).status == 303
    resp = await client.get("/login", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == home


async def test_health_is_open_and_metrics_are_open_to_this_machine_only(client, app, store, users):
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/metrics")).status == 200


@pytest.fixture
async def remote_client(loop_guard, aiohttp_client, app):
    """Requests as if from another machine over https (the test server itself is loopback http)."""

    @web.middleware
    async def from_afar(request, handler):
        return await handler(request.clone(remote="203.0.113.9", scheme="https"))

    app.middlewares.insert(0, from_afar)
    return await aiohttp_client(app)


async def test_metrics_from_another_machine_need_a_login(remote_client, store, users):
    assert (await remote_client.get("/metrics")).status == 401
    token, _ = await issue_token(store, "gail", "prometheus")
    assert (await remote_client.get("/metrics", headers=bearer(token))).status == 200


# ---------------------------------------------------------------------- sessions


async def test_a_login_sets_an_httponly_lax_session_cookie_whose_value_the_store_never_sees(client, store, users):
    resp = await login(client, "sam")
    assert resp.status == 303
    cookie = SimpleCookie(resp.headers["Set-Cookie"] if SESSION_COOKIE in resp.headers["Set-Cookie"]
                          else next(h for h in resp.headers.getall("Set-Cookie") if SESSION_COOKIE in h))
    morsel = cookie[SESSION_COOKIE]
    assert morsel["httponly"] and morsel["samesite"] == "Lax" and morsel["path"] == "/"
    assert not morsel["secure"]  # plain http: a Secure cookie would never come back
    assert int(morsel["max-age"]) == POLICY.session_lifetime_s
    found = await store.get_session(secret_hash(morsel.value))
    assert found is not None and found[1].name == "sam"
    assert await store.get_session(morsel.value) is None


async def test_over_https_the_session_cookie_is_secure(remote_client, users):
    form = await remote_client.get("/login")
    [form_cookie] = [h for h in form.headers.getall("Set-Cookie") if h.startswith(LOGIN_CSRF_COOKIE)]
    form_morsel = SimpleCookie(form_cookie)[LOGIN_CSRF_COOKIE]
    assert form_morsel["secure"] and form_morsel["samesite"] == "Strict"
    # the test client talks plain http, so it would not send a Secure cookie back by itself
    resp = await remote_client.post("/login", data={"username": "sam", "password": PASSWORD,
                                                    "csrf_token": form_morsel.value},
                                    headers={"Cookie": f"{LOGIN_CSRF_COOKIE}={form_morsel.value}"},
                                    allow_redirects=False)
    assert resp.status == 303
    [session] = [h for h in resp.headers.getall("Set-Cookie") if h.startswith(SESSION_COOKIE)]
    assert SimpleCookie(session)[SESSION_COOKIE]["secure"]


async def test_a_wrong_password_or_unknown_name_gets_the_same_refusal_and_no_session(client, users):
    for name, password in [("sam", "not the password"), ("nobody", PASSWORD)]:
        resp = await login(client, name, password)
        assert resp.status == 401 and "Wrong name or password." in await resp.text()
        assert not any(h.startswith(SESSION_COOKIE) for h in resp.headers.getall("Set-Cookie", []))
    assert (await client.get("/api/me")).status == 401


async def test_a_login_form_posted_without_its_csrf_token_is_refused(client, users):
    await client.get("/login")
    resp = await client.post("/login", data={"username": "sam", "password": PASSWORD}, allow_redirects=False)
    assert resp.status == 403 and "expired" in await resp.text()
    resp = await client.post("/login", data={"username": "sam", "password": PASSWORD, "csrf_token": "forged"},
                             allow_redirects=False)
    assert resp.status == 403
    assert (await client.get("/api/me")).status == 401


async def test_a_session_expires_after_its_lifetime(client, clock, users):
    await logged_in(client, "ben")
    clock.advance(POLICY.session_lifetime_s - 1)
    assert (await client.get("/api/me")).status == 200
    clock.advance(2)
    assert (await client.get("/api/me")).status == 401
    assert (await client.get("/", allow_redirects=False)).status == 303


async def test_logout_deletes_the_session_so_its_cookie_is_worthless_afterwards(client, store, users):
    csrf = await logged_in(client, "sam")
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))[SESSION_COOKIE].value
    resp = await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login"
    assert await store.get_session(secret_hash(cookie)) is None
    assert (await client.get("/api/me", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})).status == 401


async def test_a_disabled_user_loses_sessions_and_tokens_and_cannot_log_in(client, store, users):
    await logged_in(client, "ben")
    token, _ = await issue_token(store, "ben")
    await disable_account(store, "ben")
    assert (await client.get("/api/me")).status == 401
    assert (await client.get("/api/me", headers=bearer(token))).status == 401
    assert (await login(client, "ben")).status == 401
    assert (await store.get_agent("ben")).state == "away"


# ---------------------------------------------------------------------- CSRF


async def test_a_state_changing_request_of_a_session_needs_its_csrf_token(client, store, users, calls):
    csrf = await logged_in(client, "ben")
    path = "/api/calls/c-benefits/personal-id"
    for headers in ({}, {CSRF_HEADER: "wrong"}, {CSRF_HEADER: csrf + "x"}):
        resp = await client.post(path, headers=headers)
        assert resp.status == 403 and "CSRF" in (await resp.json())["error"]
    assert await store.list_audit() == []  # refused before the handler ran
    resp = await client.post(path, headers={CSRF_HEADER: csrf})
    assert resp.status == 403 and "handling" in (await resp.json())["error"]  # past CSRF, not handling the caller


async def test_logout_without_the_csrf_token_is_refused(client, users):
    await logged_in(client, "sam")
    resp = await client.post("/logout", data={}, allow_redirects=False)
    assert resp.status == 403 and "CSRF" in await resp.text()
    assert (await client.get("/api/me")).status == 200


async def test_a_websocket_of_a_session_must_come_from_this_sites_pages(loop_guard, aiohttp_client, app, users):
    async def echo(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hello")
        await ws.close()
        return ws

    app.router.add_get("/ws-test", echo)
    client = await aiohttp_client(app)
    await logged_in(client, "sam")
    for origin in ("http://evil.example", None):
        with pytest.raises(Exception) as refused:
            await client.ws_connect("/ws-test", headers={"Origin": origin} if origin else {})
        assert "403" in str(refused.value)
    async with client.ws_connect("/ws-test", headers={"Origin": str(client.make_url("/")).rstrip("/")}) as ws:
        msg = await ws.receive()
        assert msg.type == WSMsgType.TEXT and msg.data == "hello"


# ---------------------------------------------------------------------- API tokens


async def test_an_api_token_opens_the_api_without_csrf_and_a_bad_or_revoked_one_does_not(client, store, users, calls):
    token, kept = await issue_token(store, "sam", "reports")
    assert kept.token_hash == secret_hash(token) and token not in kept.token_hash
    assert (await client.get("/api/calls", headers=bearer(token))).status == 200
    for header in (f"Bearer {token}x", "Bearer ", f"Basic {token}", token):
        resp = await client.get("/api/calls", headers={"Authorization": header})
        assert resp.status == 401, header
    await revoke_token(store, "sam", kept.token_hash[:12])
    assert (await client.get("/api/calls", headers=bearer(token))).status == 401


async def test_a_bad_token_is_refused_even_beside_a_good_session_cookie(client, users):
    await logged_in(client, "sam")
    assert (await client.get("/api/me", headers=bearer("vbt_forged"))).status == 401


async def test_a_token_post_needs_no_csrf_token(client, store, users, calls):
    token, _ = await issue_token(store, "ben")
    resp = await client.post("/api/calls/c-benefits/personal-id", headers=bearer(token))
    assert resp.status == 403 and "handling" in (await resp.json())["error"]


# ---------------------------------------------------------------------- roles


async def test_supervisor_only_endpoints_refuse_agents(client, store, users, calls):
    token, _ = await issue_token(store, "ben")
    for path in ("/api/applications", "/api/audit"):
        resp = await client.get(path, headers=bearer(token))
        assert resp.status == 403 and "supervisor" in (await resp.json())["error"]


async def test_a_supervisor_sees_every_call_and_an_agent_only_those_of_their_queues(client, store, users, calls):
    sam, _ = await issue_token(store, "sam")
    ben, _ = await issue_token(store, "ben")
    every = (await (await client.get("/api/calls", headers=bearer(sam))).json())["calls"]
    assert {c["call_id"] for c in every} == {"c-benefits", "c-general", "c-bot"}
    mine = (await (await client.get("/api/calls", headers=bearer(ben))).json())["calls"]
    assert [c["call_id"] for c in mine] == ["c-benefits"]
    assert (await client.get("/api/calls/c-benefits", headers=bearer(ben))).status == 200
    for other in ("c-general", "c-bot"):
        assert (await client.get(f"/api/calls/{other}", headers=bearer(ben))).status == 404
        assert (await client.get(f"/api/calls/{other}", headers=bearer(sam))).status == 200


async def test_an_agent_sees_a_caller_waiting_in_their_queue_before_the_call_ends(client, store, users):
    live = CallReport(call="sip:live", call_id="live", started_at="2026-11-28T10:05:00+00:00")
    await store.start_call(live)
    await store.enqueue("live", "benefits", reason="complex_case")
    ben, _ = await issue_token(store, "ben")
    gail, _ = await issue_token(store, "gail")
    assert [c["call_id"] for c in (await (await client.get("/api/calls", headers=bearer(ben))).json())["calls"]] \
        == ["live"]
    assert (await client.get("/api/calls/live", headers=bearer(ben))).status == 200
    assert (await client.get("/api/calls/live", headers=bearer(gail))).status == 404


async def test_me_tells_a_browser_its_user_queues_and_csrf_token(client, users):
    csrf = await logged_in(client, "ben")
    me = await (await client.get("/api/me")).json()
    assert me == {"name": "ben", "role": "agent", "queues": ["benefits"], "via": "session", "csrf_token": csrf}


# ---------------------------------------------------------------------- passwords


async def test_passwords_are_stored_as_argon2id_hashes_never_as_themselves(store, users):
    for user in await store.list_users():
        assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
        assert "password_hash" not in user.to_json()
    hashes = [u.password_hash for u in await store.list_users()]
    assert len(set(hashes)) == len(hashes)  # salted


def test_the_service_hashes_with_argon2_cffis_defaults():
    ours, defaults = Passwords().hasher, PasswordHasher()
    for name in ("time_cost", "memory_cost", "parallelism", "hash_len", "salt_len", "type"):
        assert getattr(ours, name) == getattr(defaults, name), name


async def test_a_hash_made_with_other_parameters_is_renewed_at_the_next_login(loop_guard, aiohttp_client, store,
                                                                              clock, ticks, users):
    """The users fixture hashed with cheap parameters; a service on the library's defaults renews them."""
    app = make_app(store, CallMetrics(), auth=Auth(store, POLICY, now=clock, throttle_clock=ticks))
    client = await aiohttp_client(app)
    assert (await login(client, "sam")).status == 303
    renewed = (await store.get_user("sam")).password_hash
    assert renewed.startswith("$argon2id$") and "m=65536,t=3,p=4" in renewed
    assert not PasswordHasher().check_needs_rehash(renewed)
    assert await Passwords().verify(renewed, PASSWORD)
    assert CHEAP.check_needs_rehash((await store.get_user("ben")).password_hash) is False  # others untouched


# ---------------------------------------------------------------------- guessing


async def test_repeated_failures_for_a_name_make_every_try_wait_even_with_the_right_password(client, ticks, users):
    for _ in range(POLICY.free_failures):
        assert (await login(client, "sam", "guess")).status == 401
    resp = await login(client, "sam")
    assert resp.status == 429 and resp.headers["Retry-After"] == "10" and "Try again in" in await resp.text()
    ticks.now_s += 10
    assert (await login(client, "sam")).status == 303


async def test_failures_from_one_address_slow_it_down_whichever_names_it_tries(client, ticks, users):
    for i in range(POLICY.free_failures):
        assert (await login(client, f"name{i}", "guess")).status == 401
    assert (await login(client, "gail")).status == 429
    ticks.now_s += POLICY.first_delay_s
    assert (await login(client, "gail")).status == 303


def test_the_wait_doubles_with_each_failure_up_to_the_cap_and_is_forgotten_after_the_window():
    ticks = Ticks()
    throttle = LoginThrottle(POLICY, ticks)
    waits = []
    for _ in range(POLICY.free_failures + 4):
        waits.append(throttle.wait_s("user:x"))
        throttle.failed("user:x")
    assert waits == [0, 0, 0, 10, 20, 40, 60]
    assert throttle.wait_s("user:x") == 60 and throttle.wait_s("user:y") == 0
    ticks.now_s += POLICY.failure_window_s + 1
    assert throttle.wait_s("user:x") == 0
    throttle.failed("user:x")
    assert throttle.wait_s("user:x") == 0  # counting starts again
    throttle.succeeded("user:x")


def test_the_throttle_forgets_the_longest_quiet_keys_beyond_its_size():
    throttle = LoginThrottle(AuthPolicy(free_failures=0, tracked_keys=2), Ticks())
    for key in ("a", "b", "c"):
        throttle.failed(key)
    assert throttle.wait_s("a") == 0 and throttle.wait_s("b") > 0 and throttle.wait_s("c") > 0


# ---------------------------------------------------------------------- personal data


async def test_codes_are_masked_in_call_records_written_and_spoken(client, store, users, calls):
    sam, _ = await issue_token(store, "sam")
    record = await (await client.get("/api/calls/c-benefits", headers=bearer(sam))).json()
    assert record["intake"]["fields"]["personal_id"] == MASKED
    texts = [t["text"] for t in record["turns"]]
    assert texts[1] == "two nine zero two eight eight dash *** dee"
    assert texts[2].endswith("2 9 0 2 8 8, dash, ***, D.")
    assert texts[3] == f"it is {MASKED}"
    body = await (await client.get("/api/calls/c-benefits", headers=bearer(sam))).text()
    assert PID not in body and "one three six" not in body and "1 3 6" not in body


async def test_lists_hold_no_transcripts_and_mask_application_fields(client, store, users, calls):
    sam, _ = await issue_token(store, "sam")
    listed = (await (await client.get("/api/calls", headers=bearer(sam))).json())["calls"]
    assert all("turns" not in c and "text" not in c for c in listed)
    apps = (await (await client.get("/api/applications", headers=bearer(sam))).json())["applications"]
    assert [a["fields"]["personal_id"] for a in apps] == [MASKED]
    assert "turns" not in apps[0]


async def test_the_agent_handling_a_caller_opens_the_code_and_that_is_audited(client, store, clock, users, calls):
    entry = await store.enqueue("c-benefits", "benefits", reason="complex_case")
    assert (await store.take_next("ben", ["benefits"])).entry_id == entry.entry_id
    csrf = await logged_in(client, "ben")
    resp = await client.post("/api/calls/c-benefits/personal-id", headers={CSRF_HEADER: csrf})
    assert resp.status == 200
    assert await resp.json() == {"call_id": "c-benefits", "form": "housing_allowance",
                                 "personal_ids": {"personal_id": PID}}
    [opened] = await store.list_audit("c-benefits")
    assert (opened.user, opened.action, opened.at) == ("ben", UNMASK_ACTION, START)
    # the record itself stays masked, for ben too
    record = await (await client.get("/api/calls/c-benefits")).json()
    assert record["intake"]["fields"]["personal_id"] == MASKED

    sam, _ = await issue_token(store, "sam")
    audit = (await (await client.get("/api/audit?call_id=c-benefits", headers=bearer(sam))).json())["entries"]
    assert [(a["user"], a["action"], a["call_id"]) for a in audit] == [("ben", UNMASK_ACTION, "c-benefits")]


async def test_nobody_but_the_handling_agent_opens_a_code_and_each_refusal_is_audited(client, store, users, calls):
    await store.enqueue("c-benefits", "benefits")
    await store.take_next("ben", ["benefits"])
    for name in ("gail", "sam"):
        token, _ = await issue_token(store, name)
        resp = await client.post("/api/calls/c-benefits/personal-id", headers=bearer(token))
        assert resp.status == 403 and PID not in await resp.text()
    refused = await store.list_audit("c-benefits")
    assert sorted((a.user, a.action) for a in refused) == [("gail", UNMASK_REFUSED_ACTION),
                                                           ("sam", UNMASK_REFUSED_ACTION)]


async def test_once_the_agent_has_finished_the_code_is_closed_to_them_again(client, store, users, calls):
    entry = await store.enqueue("c-benefits", "benefits")
    await store.take_next("ben", ["benefits"])
    await store.mark_connected(entry.entry_id)
    token, _ = await issue_token(store, "ben")
    assert (await client.post("/api/calls/c-benefits/personal-id", headers=bearer(token))).status == 200
    await store.finish(entry.entry_id, "done")
    assert (await client.post("/api/calls/c-benefits/personal-id", headers=bearer(token))).status == 403


def test_the_masked_form_is_the_logs_form():
    assert mask_personal_id(PID) == MASKED
