"""Callers wait in the real service's queue and reach an agent's phone: `voicebot serve` as a process, Debian's
baresip as the caller and as the agent's phone, the agent working through the HTTP API with a token.

Also the SIP front's side of it: a worker may call a phone on a configured agent domain and no other."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.baresip_agent import BaresipAgent, free_udp_tcp_port, running
from tests.e2e.service_process import ServiceProcess, loopback_config
from tests.e2e.test_serve import wait_for
from tests.e2e.test_sip_front import blocked, incoming, running_front, worker
from voicebot.sip.settings import SipTransferSettings

pytestmark = pytest.mark.slow

#: what the bot says when the caller's turn in the queue is next, when an agent takes the call, and when that
#: agent's phone does not (scenarios/benefits.toml [queue.prompts])
NEXT_IN_QUEUE = "You are next in the queue."
CONNECTING = "An advisor is free now. Connecting you."
UNREACHABLE = "Sorry, the advisor could not be reached. You keep your place in the queue."


def service(tmp_path: Path, *agent_phones: BaresipAgent, mode: str = "refer", workers: int | None = 2,
            timeout_s: float = 20.0) -> ServiceProcess:
    """A service whose callers wait in its queue, with the agents' phones (their own ports only) on agent domains;
    ``timeout_s``: how long an agent's phone may ring (bridge) or a REFER take."""
    domains = ", ".join(f'"127.0.0.1:{phone.sip_port}"' for phone in agent_phones)
    config = loopback_config(tmp_path / "data", queue=True) + (
        f'[sip.transfer]\nmode = "{mode}"\ntimeout_s = {timeout_s}\nagent_domains = [{domains}]\n')
    return ServiceProcess(tmp_path, config, *(("--workers", str(workers)) if workers is not None else ()))


async def ask_for_a_person(svc: ServiceProcess, caller: BaresipAgent) -> dict:
    """Dial, press 0 once the bot greets, and wait until the caller is in the queue: its entry."""
    await caller.dial(svc.uri)
    await caller.wait_event("CALL_ESTABLISHED", 30)

    async def greeting():
        calls = (await svc.get("/api/calls"))["calls"]
        return calls and (await svc.get(f"/api/calls/{calls[0]['call_id']}"))["turns"]

    await wait_for(greeting, 60, "the bot's greeting", lambda: svc.log()[-3000:])
    await caller.send_dtmf("0")

    async def in_queue():
        entries = (await svc.get("/api/queue"))["entries"]
        return entries[0] if entries else None

    return await wait_for(in_queue, 120, "the caller to wait in the queue", lambda: svc.log()[-4000:])


async def bot_said(svc: ServiceProcess, call_id: str, text: str, timeout_s: float = 120.0) -> dict:
    async def said():
        record = await svc.get(f"/api/calls/{call_id}")
        return record if any(t["speaker"] == "bot" and t["text"] == text for t in record["turns"]) else None

    return await wait_for(said, timeout_s, f"the bot to say {text!r}", lambda: svc.log()[-3000:])


async def the_caller_is(svc: ServiceProcess, state: str) -> list[dict]:
    """The queue's live entries, once the only one is in ``state``."""
    async def there():
        entries = (await svc.get("/api/queue?state=waiting,connecting,connected"))["entries"]
        return entries if [e["state"] for e in entries] == [state] else None

    return await wait_for(there, 60, f"the caller to be {state}", lambda: svc.log()[-3000:])


async def ended_call(svc: ServiceProcess, call_id: str) -> dict:
    async def ended():
        record = await svc.get(f"/api/calls/{call_id}")
        return record if record["status"] == "ended" else None

    return await wait_for(ended, 60, "the call to end", lambda: svc.log()[-3000:])


@pytest.mark.parametrize("mode", ["refer", "bridge"])
async def test_a_waiting_caller_reaches_the_phone_of_the_agent_who_accepts_and_leaves_the_queue(tmp_path, mode):
    """REFER: the caller's phone calls the agent's; bridge: a worker calls it through the front."""
    caller = BaresipAgent(tmp_path / "caller", user="ann", mic=None)
    phone = BaresipAgent(tmp_path / "anna-phone", user="anna", mic=None, auto_answer=True)
    svc = service(tmp_path, phone, mode=mode)
    try:
        await svc.start()
        anna = await svc.user_token("anna", "agent", "--queues", "general", "--sip-uri", phone.uri)
        async with running(caller, phone):
            entry = await ask_for_a_person(svc, caller)
            assert (entry["position"], entry["reason"], entry["queue"]) == (1, "caller_request", "general")
            await bot_said(svc, entry["call_id"], NEXT_IN_QUEUE)  # the hold loop tells the caller where they stand
            assert incoming(phone) == 0

            status, _ = await svc.post("/api/agent/state", anna, {"state": "available"})
            assert status == 200
            status, taken = await svc.post("/api/queue/next", anna)
            assert status == 200, taken
            assert (taken["entry"]["call_id"], taken["entry"]["state"]) == (entry["call_id"], "connecting")
            rang = await phone.wait_event("CALL_ESTABLISHED", 60)
            [through] = await the_caller_is(svc, "connected")
            status, done = await svc.post(f"/api/queue/{entry['entry_id']}/done", anna, {"note": "helped"})
            assert status == 200, done
            await caller.hangup()
            record = await ended_call(svc, entry["call_id"])
    finally:
        await svc.stop()
    # the agent's phone sees the caller (REFER) or the service (bridge) calling
    assert rang.data["peeruri"].startswith("sip:ann@" if mode == "refer" else "sip:voicebot@"), rang.data
    assert through["agent"] == "anna" and through["wait_s"] > 0
    assert done["entry"]["state"] == "done" and done["entry"]["note"] == "helped"
    assert record["outcome"] == "transferred" and record["transfer"]["reason"] == "caller_request"
    said = [t["text"] for t in record["turns"] if t["speaker"] == "bot"]
    assert NEXT_IN_QUEUE in said and said[-1] == CONNECTING, said


@pytest.mark.parametrize("mode, phone_does", [("refer", "reject"), ("bridge", "not answer")])
async def test_a_caller_whose_agent_s_phone_does_not_take_the_call_waits_again_and_reaches_the_next_agent(
        tmp_path, mode, phone_does):
    """Anna accepts, but her phone turns the call away (REFER: the caller's phone is refused) or rings out
    (bridge: the service stops ringing it): the caller hears so, waits again at their place, and anna is set
    away; then bob accepts and his phone has the caller."""
    caller = BaresipAgent(tmp_path / "caller", user="ann", mic=None)
    dead = BaresipAgent(tmp_path / "anna-phone", user="anna", mic=None, auto_answer=False)
    phone = BaresipAgent(tmp_path / "bob-phone", user="bob", mic=None, auto_answer=True)
    svc = service(tmp_path, dead, phone, mode=mode, timeout_s=8)
    try:
        await svc.start()
        anna = await svc.user_token("anna", "agent", "--queues", "general", "--sip-uri", dead.uri)
        bob = await svc.user_token("bob", "agent", "--queues", "general", "--sip-uri", phone.uri)
        async with running(caller, dead, phone):
            entry = await ask_for_a_person(svc, caller)
            status, taken = await svc.post("/api/queue/next", anna)
            assert status == 200, taken
            await dead.wait_event("CALL_INCOMING", 60)
            if phone_does == "reject":
                await dead.hangup()
            await bot_said(svc, entry["call_id"], UNREACHABLE)
            [again] = await the_caller_is(svc, "waiting")
            anna_desk = (await _get(svc, "/api/agent", anna))["agent"]

            status, taken = await svc.post("/api/queue/next", bob)
            assert status == 200, taken
            rang = await phone.wait_event("CALL_ESTABLISHED", 60)
            [through] = await the_caller_is(svc, "connected")
            await caller.hangup()
            record = await ended_call(svc, entry["call_id"])
    finally:
        await svc.stop()
    assert incoming(dead) == 0
    assert (again["entry_id"], again["position"]) == (entry["entry_id"], 1) and again["agent"] is None
    assert anna_desk["state"] == "away"
    assert rang.data["peeruri"].startswith("sip:ann@" if mode == "refer" else "sip:voicebot@"), rang.data
    assert (through["entry_id"], through["agent"]) == (entry["entry_id"], "bob")
    assert record["outcome"] == "transferred"
    said = [t["text"] for t in record["turns"] if t["speaker"] == "bot"]
    assert said.count(CONNECTING) == 2 and said[-1] == CONNECTING, said
    assert said.index(UNREACHABLE) > said.index(CONNECTING), said


async def _get(svc: ServiceProcess, path: str, token: str) -> dict:
    """GET from the API as the holder of ``token``."""
    async with aiohttp.ClientSession() as http:
        async with http.get(svc.api_url + path, headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


async def test_a_caller_who_hangs_up_while_waiting_is_recorded_as_abandoned_with_the_wait(tmp_path):
    """With PJSIP in the service process (--workers 0): the queue is there too."""
    caller = BaresipAgent(tmp_path / "caller", user="ann", mic=None)
    phone = BaresipAgent(tmp_path / "anna-phone", user="anna", mic=None, auto_answer=True)
    svc = service(tmp_path, phone, workers=0)
    loop = asyncio.get_running_loop()
    try:
        await svc.start()
        async with running(caller):
            entry = await ask_for_a_person(svc, caller)
            seen_at = loop.time()
            await bot_said(svc, entry["call_id"], NEXT_IN_QUEUE)
            await caller.hangup()
            held_s = loop.time() - seen_at

            async def abandoned():
                entries = (await svc.get("/api/queue?state=waiting,abandoned"))["entries"]
                return entries if entries and entries[0]["state"] == "abandoned" else None

            [left] = await wait_for(abandoned, 60, "the caller to be recorded as abandoned", lambda: svc.log()[-3000:])
    finally:
        await svc.stop()
    assert left["call_id"] == entry["call_id"] and left["agent"] is None
    # from joining the queue to hanging up: at least what the test saw of it (give or take the rounding to 0.1 s)
    assert left["wait_s"] >= held_s - 0.2 > 0, (left, held_s)


async def test_an_agent_whose_phone_is_on_no_agent_domain_is_refused_and_the_caller_keeps_waiting(tmp_path):
    caller = BaresipAgent(tmp_path / "caller", user="ann", mic=None)
    phone = BaresipAgent(tmp_path / "anna-phone", user="anna", mic=None, auto_answer=True)
    svc = service(tmp_path, phone)
    try:
        await svc.start()
        mallory = await svc.user_token("mallory", "agent", "--queues", "general",
                                       "--sip-uri", f"sip:mallory@127.0.0.1:{free_udp_tcp_port()}")
        async with running(caller):
            entry = await ask_for_a_person(svc, caller)
            status, refused = await svc.post("/api/queue/next", mallory)
            waiting = (await svc.get("/api/queue"))["entries"]
            await caller.hangup()
    finally:
        await svc.stop()
    assert status == 409 and "agent_domains" in refused["error"], refused
    assert [e["entry_id"] for e in waiting] == [entry["entry_id"]]


# --------------------------------------------------------------------------- the front


async def test_a_worker_may_call_a_phone_on_an_agent_domain_and_no_other_port_there(tmp_path, caplog):
    front_port = free_udp_tcp_port()
    agent = BaresipAgent(tmp_path / "agent", user="anna", mic=None, auto_answer=True)
    stranger = BaresipAgent(tmp_path / "stranger", user="someone", mic=None, auto_answer=True)
    bridging = worker(tmp_path, "worker", account_params=(f'outbound="sip:127.0.0.1:{front_port};lr"',))
    async with running(agent, stranger, bridging):
        transfer = SipTransferSettings(mode="bridge", agent_domains=(f"127.0.0.1:{agent.sip_port}",))
        async with running_front(tmp_path, [bridging], port=front_port, transfer=transfer):
            await bridging.dial(stranger.uri)
            refused = await bridging.wait_event("CALL_CLOSED", 15)
            await bridging.dial(agent.uri)
            taken = await agent.wait_event("CALL_ESTABLISHED", 15)
            await bridging.hangup()
            await agent.wait_event("CALL_CLOSED", 10)
    assert refused.data.get("param") == "403 Forbidden", refused.data
    assert incoming(stranger) == 0 and taken.data["peeruri"] == bridging.uri
    assert any("from a worker to " + stranger.uri in r for r in blocked(caplog, "relay_refused"))
