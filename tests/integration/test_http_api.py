"""The HTTP API over a real SQLite store, through aiohttp's test client and a real socket."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from datetime import date
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from tests.unit.test_session import RATE, ScriptedEngine, SilentPrompts
from voicebot.audio.wav import load_wav
from voicebot.calls.report import CallReport, Turn
from voicebot.calls.session import CallSession, SessionServices
from voicebot.clock import VirtualClock
from voicebot.config import PROJECT_ROOT
from voicebot.dialogue.policy import Policy
from voicebot.dialogue.scenario import load_scenario
from voicebot.events import IntakeForm, Transfer
from voicebot.metrics import CallMetrics
from voicebot.privacy import mask_json, mask_personal_id
from voicebot.storage import SqliteCallStore, StoreError, User
from voicebot.storage.recorder import StoreRecorder
from voicebot.transports.replay import ReplayTransport
from voicebot.web import DEFAULT_HOST, HttpError, make_app, run_http
from voicebot.web.accounts import issue_token

PID = "290288-136D"


@pytest.fixture
async def store(tmp_path: Path):
    async with SqliteCallStore(tmp_path / "voicebot.sqlite3") as s:
        yield s


@pytest.fixture
def metrics() -> CallMetrics:
    return CallMetrics()


@pytest.fixture
async def client(loop_guard, aiohttp_client, store, metrics):
    """A supervisor's API token on every request (logins and roles: test_web_auth.py).
    Asks for loop_guard first so the guard checks for leaks after the client has closed."""
    await store.add_user(User("sam", "supervisor", "$argon2id$not-used-here"))
    token, _ = await issue_token(store, "sam")
    return await aiohttp_client(make_app(store, metrics), headers={"Authorization": f"Bearer {token}"})


async def record_call(recorder: StoreRecorder, call_id: str, started_at: str, *, outcome="completed",
                      transfer: Transfer | None = None, form: dict | None = None, submit=False) -> CallReport:
    """A call written through the recorder hooks in the order a session calls them."""
    r = CallReport(call=f"sip:{call_id}", call_id=call_id, caller_id="+358401234567", engine="vosk",
                   started_at=started_at)
    await recorder.call_started(r)
    for turn in (Turn("bot", "Welcome.", 0.0, 1.5), Turn("caller", "housing allowance", 2.0, 3.0, confidence=0.9)):
        r.turns.append(turn)
        await recorder.turn_added(r, turn)
    r.latency_ms.append(640.0)
    if form is not None:
        r.intake = IntakeForm("housing_allowance", "incomplete", form)
        await recorder.intake_saved(r, r.intake)
        if submit:
            submitted = IntakeForm("housing_allowance", "submitted", form)
            r.intake = IntakeForm("housing_allowance", "submitted", form,
                                  await recorder.submit_intake(r, submitted))
    r.outcome, r.transfer = outcome, transfer
    r.ended_at, r.duration_s = started_at, 3.5
    await recorder.call_ended(r)
    return r


def one_line_error(body: dict) -> str:
    assert set(body) == {"error"}
    assert body["error"] and "\n" not in body["error"]
    return body["error"]


async def test_calls_are_listed_newest_first_with_a_default_limit(client, store, metrics):
    recorder = StoreRecorder(store, metrics)
    for i in range(3):
        await record_call(recorder, f"c{i}", f"2026-11-28T10:0{i}:00+00:00")
    resp = await client.get("/api/calls")
    assert resp.status == 200 and resp.content_type == "application/json"
    body = await resp.json()
    assert body["limit"] == 50
    assert [c["call_id"] for c in body["calls"]] == ["c2", "c1", "c0"]
    assert body["calls"][0]["status"] == "ended" and body["calls"][0]["turn_count"] == 2
    body = await (await client.get("/api/calls?limit=2")).json()
    assert [c["call_id"] for c in body["calls"]] == ["c2", "c1"]
    assert (await client.get("/api/calls?limit=500")).status == 200


@pytest.mark.parametrize("query", ["limit=abc", "limit=0", "limit=-3", "limit=501", "limit=1.5", "limit="])
async def test_a_bad_limit_is_a_400_with_a_one_line_json_error(client, query):
    for path in ("/api/calls", "/api/applications"):
        resp = await client.get(f"{path}?{query}")
        assert resp.status == 400 and resp.content_type == "application/json"
        assert "limit must be a whole number from 1 to 500" in one_line_error(await resp.json())


async def test_one_call_is_the_stored_report_with_its_status(client, store, metrics):
    r = await record_call(StoreRecorder(store, metrics), "abc123", "2026-11-28T10:00:00+00:00",
                          outcome="transferred", transfer=Transfer("complex_case", "benefits"))
    resp = await client.get("/api/calls/abc123")
    assert resp.status == 200
    assert await resp.json() == {**r.to_json(), "status": "ended"}


async def test_a_call_in_progress_shows_its_turns_so_far(client, store):
    recorder = StoreRecorder(store)
    r = CallReport(call="sip:live", call_id="live", started_at="2026-11-28T10:00:00+00:00")
    await recorder.call_started(r)
    r.turns.append(Turn("bot", "Welcome.", 0.0, 1.0))
    await recorder.turn_added(r, r.turns[0])
    body = await (await client.get("/api/calls/live")).json()
    assert body["status"] == "active" and body["outcome"] is None
    assert [t["text"] for t in body["turns"]] == ["Welcome."]


async def test_an_unknown_call_is_a_404_json_error(client):
    resp = await client.get("/api/calls/does-not-exist")
    assert resp.status == 404 and resp.content_type == "application/json"
    assert one_line_error(await resp.json()) == "no call with id 'does-not-exist'"


async def test_an_unknown_path_is_a_404_json_error(client):
    resp = await client.get("/api/nothing-here")
    assert resp.status == 404
    one_line_error(await resp.json())


async def test_applications_list_submitted_and_incomplete_forms_newest_first(client, store, metrics):
    recorder = StoreRecorder(store, metrics)
    await record_call(recorder, "a1", "2026-11-28T10:00:00+00:00", form={"personal_id": PID})
    await record_call(recorder, "a2", "2026-11-28T10:01:00+00:00", form={"personal_id": PID, "household_size": 3},
                      submit=True)
    await record_call(recorder, "a3", "2026-11-28T10:02:00+00:00")
    body = await (await client.get("/api/applications")).json()
    assert [(a["call_id"], a["status"]) for a in body["applications"]] == [("a2", "submitted"), ("a1", "incomplete")]
    submitted = body["applications"][0]
    assert submitted["reference"] == "HA100001"
    assert submitted["fields"] == {"personal_id": mask_personal_id(PID), "household_size": 3}  # masked for all
    assert submitted["caller_id"] == "+358401234567" and submitted["call_status"] == "ended"
    only = await (await client.get("/api/applications?status=incomplete")).json()
    assert [a["call_id"] for a in only["applications"]] == ["a1"]
    assert len((await (await client.get("/api/applications?limit=1")).json())["applications"]) == 1


async def test_an_unknown_application_status_is_a_400(client):
    resp = await client.get("/api/applications?status=approved")
    assert resp.status == 400
    assert "status must be one of submitted, incomplete" in one_line_error(await resp.json())


async def test_health_is_ok_while_the_store_answers_and_503_after(client, store):
    resp = await client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    await store.close()
    resp = await client.get("/healthz")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "unavailable" and "closed" in body["error"]
    resp = await client.get("/api/calls")
    assert resp.status == 503
    one_line_error(await resp.json())


async def test_health_is_503_with_the_services_own_problem_while_it_has_one(loop_guard, aiohttp_client, store,
                                                                               metrics):
    problems = ["the SIP front (Kamailio) is not running"]
    client = await aiohttp_client(make_app(store, metrics, health_check=lambda: problems[0] if problems else None))
    resp = await client.get("/healthz")
    assert resp.status == 503 and (await resp.json())["error"] == "the SIP front (Kamailio) is not running"
    problems.clear()
    assert (await client.get("/healthz")).status == 200


async def test_metrics_show_calls_outcomes_transfers_and_latencies(client, store, metrics):
    recorder = StoreRecorder(store, metrics)
    await record_call(recorder, "m1", "2026-11-28T10:00:00+00:00", outcome="transferred",
                      transfer=Transfer("caller_request", "benefits"))
    metrics.asr_decode(0.042)
    live = CallReport(call="sip:live", call_id="live", started_at="2026-11-28T10:05:00+00:00")
    await recorder.call_started(live)
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    for line in [
        "voicebot_active_calls 1.0",
        'voicebot_calls_total{outcome="transferred"} 1.0',
        'voicebot_calls_total{outcome="completed"} 0.0',
        'voicebot_transfers_total{reason="caller_request"} 1.0',
        "voicebot_turn_latency_seconds_count 1.0",
        "voicebot_turn_latency_seconds_sum 0.64",
        'voicebot_turn_latency_seconds_bucket{le="0.75"} 1.0',
        "voicebot_asr_decode_seconds_count 1.0",
    ]:
        assert line in text.splitlines(), line
    await recorder.call_ended(live)


async def test_an_app_that_owns_its_store_opens_and_closes_it(aiohttp_client, tmp_path):
    store = SqliteCallStore(tmp_path / "owned.sqlite3")
    client = await aiohttp_client(make_app(store, CallMetrics(), owns_store=True))
    assert (await client.get("/healthz")).status == 200
    await client.close()
    with pytest.raises(StoreError, match="closed"):
        await store.ping()


async def test_the_server_listens_on_loopback_by_default(store):
    async with run_http(make_app(store, CallMetrics()), port=0) as endpoint:
        assert endpoint.host == DEFAULT_HOST == "127.0.0.1"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{endpoint.url}/healthz") as resp:
                assert resp.status == 200 and await resp.json() == {"status": "ok"}


async def test_a_port_already_taken_is_a_one_line_error(store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(HttpError, match=f"cannot listen on 127.0.0.1:{port}") as err:
            async with run_http(make_app(store, CallMetrics()), port=port):
                pass
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------- a whole call through the session


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy(load_scenario(PROJECT_ROOT / "scenarios" / "benefits.toml"), today=date(2026, 11, 28))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng (make test installs it)")
    path = tmp_path_factory.mktemp("speech") / "u.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "170", "-w", str(path), "hello there"], check=True)
    return load_wav(path, sample_rate_hz=RATE).samples


async def test_a_session_call_reads_back_from_the_api_exactly_as_it_ran(client, store, metrics, policy, speech):
    script = ["housing allowance please", "two nine zero two eight eight dash one three six d",
              "zero zero one eight zero", "seven hundred and ten", "three", "yes", "goodbye"]
    silence = lambda s: np.zeros(int(s * RATE), np.int16)  # noqa: E731
    audio = [silence(9)]
    for _ in range(5):
        audio += [speech, silence(12)]
    audio += [speech, silence(30), speech, silence(8)]
    loop = asyncio.get_running_loop()
    services = SessionServices(
        engine=ScriptedEngine(script), prompts=SilentPrompts(), policy=policy,
        recorder=StoreRecorder(store, metrics), run_blocking=lambda fn, *a: loop.run_in_executor(None, fn, *a),
    )
    clock = VirtualClock()
    session = CallSession(services, ReplayTransport(np.concatenate(audio), RATE, clock), clock, name="session-call")
    report = await session.run()
    assert report.intake.status == "submitted" and report.intake.reference == "HA100001"

    body = await (await client.get(f"/api/calls/{report.call_id}")).json()
    assert body == mask_json({**report.to_json(), "status": "ended"})
    assert body["intake"]["fields"]["personal_id"] == mask_personal_id(PID) != PID
    apps = (await (await client.get("/api/applications?status=submitted")).json())["applications"]
    assert [(a["call_id"], a["reference"], a["fields"]["personal_id"]) for a in apps] == [
        (report.call_id, "HA100001", mask_personal_id(PID))]
    text = await (await client.get("/metrics")).text()
    assert f"voicebot_turn_latency_seconds_count {float(len(report.latency_ms))}" in text.splitlines()
    assert f'voicebot_calls_total{{outcome="{report.outcome}"}} 1.0' in text.splitlines()
