"""The agents' API and the agent view through aiohttp's test client, on each store backend (a real SQLite
file, a real PostgreSQL server): who may see and do what, and that each action reaches the store."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp import web

from tests.integration.test_web_auth import CHEAP, PASSWORD, PID, MASKED, SPOKEN, bearer, logged_in
# the store on each backend, and its clock moved by the test
from tests.unit.test_store_queue import clock, store  # noqa: F401
from voicebot.calls.report import CallReport, Turn
from voicebot.events import IntakeForm
from voicebot.metrics import CallMetrics
from voicebot.web.accounts import add_account, issue_token
from voicebot.web.agent_api import AGENT_URI_CHECK
from voicebot.web.api import UNMASK_ACTION, UNMASK_REFUSED_ACTION, make_app
from voicebot.web.auth import CSRF_HEADER, Auth, Passwords


@pytest.fixture
def app(store, clock) -> web.Application:
    return make_app(store, CallMetrics(), auth=Auth(store, now=clock, passwords=Passwords(CHEAP)))


@pytest.fixture
async def client(loop_guard, aiohttp_client, app):
    return await aiohttp_client(app)


@pytest.fixture
async def tokens(store) -> dict[str, str]:
    """A supervisor; ben serves benefits, gail general and benefits, nora has no phone yet."""
    passwords = Passwords(CHEAP)
    await add_account(store, passwords, "sam", "supervisor", PASSWORD)
    await add_account(store, passwords, "ben", "agent", PASSWORD, queues=["benefits"], sip_uri="sip:ben@pbx")
    await add_account(store, passwords, "gail", "agent", PASSWORD, queues=["general", "benefits"],
                      sip_uri="sip:gail@pbx")
    await add_account(store, passwords, "nora", "agent", PASSWORD, queues=["general"])
    return {name: (await issue_token(store, name))[0] for name in ("sam", "ben", "gail", "nora")}


async def live_call(store, call_id: str, *, with_form: bool = False) -> None:
    """A call on the line that gave its identity code (aloud and in the form) before asking for a person."""
    report = CallReport(call=f"sip:{call_id}", call_id=call_id, caller_id="+358401234567",
                        started_at="2026-11-28T10:00:00+00:00")
    await store.start_call(report)
    turns = [Turn("bot", "Please say your personal identity code.", 0.0, 2.0),
             Turn("caller", SPOKEN, 3.0, 6.0, intent="give_id", confidence=0.9),
             Turn("caller", f"it is {PID} and I want a person", 7.0, 9.0, intent="agent", confidence=0.8)]
    await store.save_progress(call_id, dict(enumerate(turns)), [])
    if with_form:
        await store.save_intake(call_id, IntakeForm("housing_allowance", "incomplete",
                                                    {"personal_id": PID, "postal_code": "00180"}))


@pytest.fixture
async def waiting(store, clock) -> dict[str, int]:
    """Callers waiting: two in benefits (the first with a form), one in general; entry ids by call id."""
    ids = {}
    for call_id, queue, reason in (("b1", "benefits", "complex_case"), ("g1", "general", "caller_request"),
                                   ("b2", "benefits", "not_understood")):
        await live_call(store, call_id, with_form=call_id == "b1")
        ids[call_id] = (await store.enqueue(call_id, queue, reason=reason, caller_id="+358401234567")).entry_id
        clock.advance(10)
    return ids


async def as_json(response) -> dict:
    assert response.content_type == "application/json", await response.text()
    return await response.json()


# ---------------------------------------------------------------------- refused access

API_ROUTES = [("GET", "/api/queue"), ("GET", "/api/callbacks"), ("GET", "/api/agent"), ("POST", "/api/agent/state"),
              ("POST", "/api/queue/next"), ("POST", "/api/queue/1/done"), ("POST", "/api/callbacks/1/claim"),
              ("POST", "/api/callbacks/1/done"), ("POST", "/api/callbacks/1/failed")]
AGENT_ONLY = [(m, p) for m, p in API_ROUTES if p not in ("/api/queue", "/api/callbacks")]
POSTS = [(m, p) for m, p in API_ROUTES if m == "POST"]
FORMS = ["/agent/state", "/agent/accept", "/agent/done", "/agent/callbacks/1/claim", "/agent/callbacks/1/done"]


@pytest.mark.parametrize("method, path", API_ROUTES)
async def test_every_agent_endpoint_refuses_a_request_without_a_login_or_with_a_bad_token(client, tokens, method,
                                                                                         path):
    for headers in ({}, bearer("vbt_forged"), bearer(tokens["ben"] + "x")):
        resp = await client.request(method, path, headers=headers)
        assert resp.status == 401 and "login needed" in (await as_json(resp))["error"]


async def test_the_agent_view_sends_a_browser_without_a_login_to_the_login_form_and_refuses_its_forms(client,
                                                                                                    tokens):
    resp = await client.get("/agent", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login?next=/agent"
    for path in FORMS:
        assert (await client.post(path, data={"state": "away"}, allow_redirects=False)).status == 401


@pytest.mark.parametrize("method, path", AGENT_ONLY)
async def test_a_supervisor_is_refused_what_only_an_agent_does(client, tokens, waiting, method, path):
    resp = await client.request(method, path, headers=bearer(tokens["sam"]), json={"state": "available"})
    assert resp.status == 403 and "agent role" in (await as_json(resp))["error"]


async def test_a_supervisor_is_refused_the_agent_view_s_forms(client, store, tokens, waiting):
    csrf = await logged_in(client, "sam")
    for path in FORMS:
        resp = await client.post(path, data={"csrf_token": csrf, "state": "available"}, allow_redirects=False)
        assert resp.status == 403, path
    assert len(await store.list_waiting()) == 3


@pytest.mark.parametrize("method, path", POSTS)
async def test_a_session_s_post_without_its_csrf_token_changes_nothing(client, store, tokens, waiting, method, path):
    await store.request_callback("b1", "benefits", "+358401234567")
    await logged_in(client, "gail")
    for headers in ({}, {CSRF_HEADER: "forged"}):
        resp = await client.request(method, path, headers=headers, json={"state": "available"})
        assert resp.status == 403 and "CSRF" in (await as_json(resp))["error"]
    assert (await store.get_agent("gail")).state == "away"
    assert len(await store.list_waiting()) == 3
    assert [c.state for c in await store.list_callbacks()] == ["open"]


@pytest.mark.parametrize("path", FORMS)
async def test_the_agent_view_s_forms_without_the_csrf_token_change_nothing(client, store, tokens, waiting, path):
    await logged_in(client, "gail")
    for data in ({"state": "available"}, {"state": "available", "csrf_token": "forged"}):
        resp = await client.post(path, data=data, allow_redirects=False)
        assert resp.status == 403 and "CSRF" in await resp.text()
    assert (await store.get_agent("gail")).state == "away"
    assert len(await store.list_waiting()) == 3


# ---------------------------------------------------------------------- the queue as agents see it


async def test_get_queue_lists_waiting_callers_with_position_wait_and_reason_by_role(client, tokens, waiting):
    every = (await as_json(await client.get("/api/queue", headers=bearer(tokens["sam"]))))["entries"]
    assert [(e["call_id"], e["queue"], e["position"], e["wait_s"], e["reason"]) for e in every] == [
        ("b1", "benefits", 1, 30.0, "complex_case"), ("g1", "general", 1, 20.0, "caller_request"),
        ("b2", "benefits", 2, 10.0, "not_understood")]
    assert all(e["state"] == "waiting" and e["entry_id"] == waiting[e["call_id"]] for e in every)
    ben = (await as_json(await client.get("/api/queue", headers=bearer(tokens["ben"]))))["entries"]
    assert [(e["call_id"], e["position"]) for e in ben] == [("b1", 1), ("b2", 2)]
    one = await as_json(await client.get("/api/queue?queue=general&limit=1", headers=bearer(tokens["sam"])))
    assert [e["call_id"] for e in one["entries"]] == ["g1"]
    assert (await as_json(await client.get("/api/queue?queue=general", headers=bearer(tokens["ben"]))))["entries"] == []


async def test_get_queue_shows_callers_who_left_with_their_recorded_wait(client, store, clock, tokens, waiting):
    clock.advance(15)
    await store.leave_queue(waiting["g1"], "abandoned")
    resp = await client.get("/api/queue?state=abandoned,waiting", headers=bearer(tokens["gail"]))
    entries = (await as_json(resp))["entries"]
    assert [(e["call_id"], e["state"], e["position"]) for e in entries] == [
        ("b1", "waiting", 1, ), ("b2", "waiting", 2), ("g1", "abandoned", None)]
    assert entries[-1]["wait_s"] == 35.0
    for query in ("state=sleeping", "state=", "limit=0", "limit=many"):
        resp = await client.get(f"/api/queue?{query}", headers=bearer(tokens["sam"]))
        assert resp.status == (200 if query == "state=" else 400), query


async def test_the_queue_shows_no_identity_code_to_anyone(client, tokens, waiting):
    for name in ("sam", "gail"):
        for path in ("/api/queue", "/api/agent"):
            text = await (await client.get(path, headers=bearer(tokens[name]))).text()
            assert PID not in text and "290288-136" not in text


# ---------------------------------------------------------------------- an agent's desk


async def test_the_desk_shows_the_next_caller_with_what_the_bot_learned_masked(client, tokens, waiting):
    desk = await as_json(await client.get("/api/agent", headers=bearer(tokens["ben"])))
    assert desk["agent"]["name"] == "ben" and desk["agent"]["state"] == "away"
    assert desk["current"] is None and desk["waiting"] == 2
    following = desk["next"]
    assert following["call_id"] == "b1" and following["reason"] == "complex_case" and following["position"] == 1
    assert following["intents"] == ["give_id", "agent"]
    assert following["form"] == {"form": "housing_allowance", "status": "incomplete", "reference": None,
                                 "fields": {"personal_id": MASKED, "postal_code": "00180"}}
    texts = [t["text"] for t in following["transcript"]]
    assert texts[0] == "Please say your personal identity code." and MASKED in texts[2]
    assert "one three six" not in texts[1]


async def test_an_agent_sets_available_and_away_and_nothing_else(client, store, tokens):
    for state in ("available", "away"):
        resp = await client.post("/api/agent/state", headers=bearer(tokens["ben"]), json={"state": state})
        assert (await as_json(resp))["agent"]["state"] == state
        assert (await store.get_agent("ben")).state == state
    for body in ({"state": "busy"}, {"state": "asleep"}, {}):
        resp = await client.post("/api/agent/state", headers=bearer(tokens["ben"]), json=body)
        assert resp.status == 400
    resp = await client.post("/api/agent/state", headers=bearer(tokens["ben"]), data="not json")
    assert resp.status == 400 and "JSON object" in (await as_json(resp))["error"]


async def test_accepting_hands_the_agent_the_next_caller_of_their_queues_and_only_the_handling_agent_unmasks(
        client, store, tokens, waiting):
    ben, gail = bearer(tokens["ben"]), bearer(tokens["gail"])
    taken = (await as_json(await client.post("/api/queue/next", headers=ben)))["entry"]
    assert (taken["call_id"], taken["state"], taken["agent"], taken["wait_s"]) == ("b1", "connecting", "ben", 30.0)
    assert taken["form"]["fields"]["personal_id"] == MASKED
    assert (await store.get_queue_entry(waiting["b1"])).state == "connecting"
    assert (await store.get_agent("ben")).state == "busy"
    resp = await client.post("/api/queue/next", headers=ben)
    assert resp.status == 409 and "already have a caller" in (await as_json(resp))["error"]
    desk = await as_json(await client.get("/api/agent", headers=ben))
    assert desk["current"]["call_id"] == "b1" and desk["next"]["call_id"] == "b2"

    opened = await as_json(await client.post("/api/calls/b1/personal-id", headers=ben))
    assert opened["personal_ids"] == {"personal_id": PID}
    assert (await client.post("/api/calls/b1/personal-id", headers=gail)).status == 403
    audit = [(e.user, e.action, e.call_id) for e in await store.list_audit()]
    assert ("ben", UNMASK_ACTION, "b1") in audit and ("gail", UNMASK_REFUSED_ACTION, "b1") in audit

    # gail serves general and benefits: the longest waiting caller of either comes next
    assert (await as_json(await client.post("/api/queue/next", headers=gail)))["entry"]["call_id"] == "g1"
    assert [e.call_id for e in await store.list_waiting()] == ["b2"]


async def test_two_accepts_by_one_agent_at_the_same_moment_hand_them_one_caller(client, store, tokens, waiting):
    """Two tabs, or a double click: both requests are in flight together."""
    gail = bearer(tokens["gail"])
    answers = await asyncio.gather(*(client.post("/api/queue/next", headers=gail) for _ in range(2)))
    bodies = [await as_json(resp) for resp in answers]
    assert sorted(resp.status for resp in answers) == [200, 409], bodies
    refusal = next(b for resp, b in zip(answers, bodies) if resp.status == 409)
    assert "already have a caller" in refusal["error"]
    taken = next(b for resp, b in zip(answers, bodies) if resp.status == 200)["entry"]
    handling = await store.list_queue(states=["connecting", "connected"])
    assert [(e.call_id, e.agent) for e in handling] == [(taken["call_id"], "gail")]
    assert len(await store.list_waiting()) == 2


async def test_done_needs_the_caller_connected_and_makes_the_agent_available_again(client, store, clock, tokens,
                                                                                   waiting):
    ben = bearer(tokens["ben"])
    entry_id = (await as_json(await client.post("/api/queue/next", headers=ben)))["entry"]["entry_id"]
    resp = await client.post(f"/api/queue/{entry_id}/done", headers=ben)
    assert resp.status == 409 and "being connected" in (await as_json(resp))["error"]
    await store.mark_connected(entry_id)  # what the call worker does once the agent's phone has the caller
    clock.advance(120)
    for other, path, status in ((bearer(tokens["gail"]), f"/api/queue/{entry_id}/done", 404),
                                (ben, f"/api/queue/{waiting['b2']}/done", 404), (ben, "/api/queue/x/done", 404)):
        assert (await client.post(path, headers=other)).status == status, path
    resp = await client.post(f"/api/queue/{entry_id}/done", headers=ben, json={"note": "told them about " + PID})
    done = (await as_json(resp))["entry"]
    assert done["state"] == "done" and done["handled_s"] == 120.0 and done["note"] == "told them about " + MASKED
    stored = await store.get_queue_entry(entry_id)
    assert stored.state == "done" and stored.note == "told them about " + PID
    assert (await store.get_agent("ben")).state == "available"
    resp = await client.post(f"/api/queue/{entry_id}/done", headers=ben)
    assert resp.status == 409
    resp = await client.post(f"/api/queue/{entry_id}/done", headers=ben, json={"note": "x" * 2001})
    assert resp.status == 400


async def test_nobody_waiting_or_no_phone_to_ring_is_a_conflict_and_takes_no_caller(loop_guard, aiohttp_client, app,
                                                                                    store, tokens, waiting):
    # as `voicebot serve` sets it from [sip.transfer] agent_domains
    app[AGENT_URI_CHECK] = lambda uri: None if uri == "sip:gail@pbx" else "not on an agent domain"
    client = await aiohttp_client(app)
    resp = await client.post("/api/queue/next", headers=bearer(tokens["nora"]))
    assert resp.status == 409 and "no SIP URI" in (await as_json(resp))["error"]
    resp = await client.post("/api/queue/next", headers=bearer(tokens["ben"]))
    assert resp.status == 409 and "cannot be connected to ben's phone: not on an agent domain" in (
        await as_json(resp))["error"]
    assert len(await store.list_waiting()) == 3 and (await store.get_agent("ben")).state == "away"
    gail = bearer(tokens["gail"])
    for _ in range(3):
        entry = (await as_json(await client.post("/api/queue/next", headers=gail)))["entry"]
        await store.mark_connected(entry["entry_id"])
        assert (await client.post(f"/api/queue/{entry['entry_id']}/done", headers=gail)).status == 200
    resp = await client.post("/api/queue/next", headers=gail)
    assert resp.status == 409 and "no caller is waiting" in (await as_json(resp))["error"]


# ---------------------------------------------------------------------- callbacks


async def test_callbacks_are_listed_by_role_claimed_by_one_agent_and_closed_by_that_agent(client, store, tokens):
    general = await store.request_callback("g1", "general", "+358401111111")
    benefits = await store.request_callback("b1", "benefits", "+358402222222")
    ben, gail = bearer(tokens["ben"]), bearer(tokens["gail"])
    listed = await as_json(await client.get("/api/callbacks", headers=ben))
    assert [(c["callback_id"], c["number"], c["state"]) for c in listed["callbacks"]] == [
        (benefits.callback_id, "+358402222222", "open")]
    every = await as_json(await client.get("/api/callbacks", headers=bearer(tokens["sam"])))
    assert [c["queue"] for c in every["callbacks"]] == ["general", "benefits"]

    assert (await client.post(f"/api/callbacks/{general.callback_id}/claim", headers=ben)).status == 404
    claimed = (await as_json(await client.post(f"/api/callbacks/{benefits.callback_id}/claim", headers=ben)))
    assert claimed["callback"]["state"] == "claimed" and claimed["callback"]["claimed_by"] == "ben"
    resp = await client.post(f"/api/callbacks/{benefits.callback_id}/claim", headers=gail)
    assert resp.status == 409 and "claimed by ben" in (await as_json(resp))["error"]
    resp = await client.post(f"/api/callbacks/{benefits.callback_id}/done", headers=gail)
    assert resp.status == 409 and "not claimed by you" in (await as_json(resp))["error"]
    assert (await client.post(f"/api/callbacks/{benefits.callback_id}/call", headers=ben)).status == 404
    done = await as_json(await client.post(f"/api/callbacks/{benefits.callback_id}/done", headers=ben,
                                           json={"note": "sorted"}))
    assert done["callback"]["state"] == "done" and done["callback"]["note"] == "sorted"
    assert (await store.get_callback(benefits.callback_id)).state == "done"

    assert (await client.post(f"/api/callbacks/{general.callback_id}/claim", headers=gail)).status == 200
    failed = await as_json(await client.post(f"/api/callbacks/{general.callback_id}/failed", headers=gail,
                                             json={"note": "no answer"}))
    assert failed["callback"]["state"] == "failed"
    assert (await as_json(await client.get("/api/callbacks", headers=gail)))["callbacks"] == []
    closed = await as_json(await client.get("/api/callbacks?state=done,failed", headers=gail))
    assert {c["state"] for c in closed["callbacks"]} == {"done", "failed"}
    assert (await client.get("/api/callbacks?state=lost", headers=gail)).status == 400


# ---------------------------------------------------------------------- the agent view (pages)


def form_token(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


async def test_an_agent_works_a_caller_through_the_page_with_its_forms(client, store, tokens, waiting):
    await logged_in(client, "ben")
    page = await (await client.get("/agent")).text()
    assert "Next caller" in page and "complex_case" in page and MASKED in page and PID not in page
    assert 'action="/agent/accept"' in page and 'id="current"' not in page
    csrf = form_token(page)
    resp = await client.post("/agent/state", data={"csrf_token": csrf, "state": "available"}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/agent"
    assert (await store.get_agent("ben")).state == "available"

    resp = await client.post("/agent/accept", data={"csrf_token": csrf}, allow_redirects=False)
    assert resp.status == 303
    assert (await store.get_queue_entry(waiting["b1"])).agent == "ben"
    page = await (await client.get("/agent")).text()
    assert "Your caller: ringing your phone" in page and 'data-call="b1"' in page and PID not in page
    assert 'action="/agent/done"' not in page  # nothing to mark done before the caller is through

    await store.mark_connected(waiting["b1"])
    page = await (await client.get("/agent")).text()
    assert "Your caller: connected to you" in page and 'action="/agent/done"' in page
    resp = await client.post("/agent/done", data={"csrf_token": csrf, "entry_id": str(waiting["b1"]),
                                                  "note": "explained the rent limits"}, allow_redirects=False)
    assert resp.status == 303
    entry = await store.get_queue_entry(waiting["b1"])
    assert entry.state == "done" and entry.note == "explained the rent limits"
    page = await (await client.get("/agent")).text()
    assert "Next caller" in page and 'id="state">available<' in page


async def test_a_refused_form_shows_the_page_with_the_reason(client, store, tokens, waiting):
    await logged_in(client, "ben")
    csrf = form_token(await (await client.get("/agent")).text())
    await client.post("/agent/accept", data={"csrf_token": csrf}, allow_redirects=False)
    resp = await client.post("/agent/accept", data={"csrf_token": csrf}, allow_redirects=False)
    assert resp.status == 409 and "already have a caller" in await resp.text()
    resp = await client.post("/agent/done", data={"csrf_token": csrf, "entry_id": "nope"}, allow_redirects=False)
    assert resp.status == 400


async def test_callbacks_are_claimed_and_closed_through_the_page(client, store, tokens):
    callback = await store.request_callback("b1", "benefits", "+358402222222")
    await logged_in(client, "ben")
    page = await (await client.get("/agent")).text()
    assert "+358402222222" in page and f'action="/agent/callbacks/{callback.callback_id}/claim"' in page
    csrf = form_token(page)
    resp = await client.post(f"/agent/callbacks/{callback.callback_id}/claim", data={"csrf_token": csrf},
                             allow_redirects=False)
    assert resp.status == 303 and (await store.get_callback(callback.callback_id)).claimed_by == "ben"
    page = await (await client.get("/agent")).text()
    assert f'action="/agent/callbacks/{callback.callback_id}/failed"' in page
    resp = await client.post(f"/agent/callbacks/{callback.callback_id}/failed",
                             data={"csrf_token": csrf, "note": "number not in use"}, allow_redirects=False)
    assert resp.status == 303
    closed = await store.get_callback(callback.callback_id)
    assert closed.state == "failed" and closed.note == "number not in use"


async def test_a_supervisor_sees_every_queue_and_callback_on_the_agent_view_without_controls(client, store, tokens,
                                                                                              waiting):
    await store.request_callback("g1", "general", "+358401111111")
    await logged_in(client, "sam")
    page = await (await client.get("/agent")).text()
    assert all(f"<td>{call_id}</td>" in page for call_id in ("b1", "b2", "g1"))
    assert "+358401111111" in page
    assert "/agent/accept" not in page and "/agent/state" not in page and "/claim" not in page
