"""`voicebot serve` as an operator runs it: signals, a kill -9 and a restart, with baresip calling."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.e2e.baresip_agent import BaresipAgent, mic_wav
from tests.e2e.service_process import ServiceProcess
from voicebot.testing.callgen import build_call

pytestmark = pytest.mark.slow

#: every port free; the HTTP API on loopback
CONFIG = """
data_dir = "{data}"
[http]
port = 0
[sip]
host = "127.0.0.1"
port = 0
rtp_port = 0
drain_timeout_s = {drain_s}
"""


def service(tmp_path: Path, *, drain_s: float = 60.0, workers: int | None = None, extra: str = "") -> ServiceProcess:
    args = ("--workers", str(workers)) if workers is not None else ()
    return ServiceProcess(tmp_path, CONFIG.format(data=tmp_path / "data", drain_s=drain_s) + extra, *args)


async def wait_for(predicate, timeout_s: float, what: str, context=lambda: ""):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        assert loop.time() < deadline, f"timed out waiting for {what}: {context()}"
        await asyncio.sleep(0.25)


#: starts the housing-allowance form and gives two fields, each character with a pause after it: what
#: this test proves is the store, so the caller is as easy to hear over a phone line as can be
FORM_CALLER = {"id": "k9_form", "voice": "espeak:en-us", "rate": 140, "lead": 4.0, "steps": [
    {"say": "I would like to apply for housing allowance."},
    {"say": "two, nine, zero, two, eight, eight, dash, one, three, six, D."},
    {"say": "zero, zero, one, eight, zero.", "gap": 30.0},
]}


async def test_kill_9_mid_form_then_restart_keeps_the_transcript_and_every_field_collected(tmp_path):
    intake = await asyncio.to_thread(build_call, FORM_CALLER, tmp_path)
    mic = await asyncio.get_running_loop().run_in_executor(None, mic_wav, intake, tmp_path / "mic.wav", "G722")
    phone = BaresipAgent(tmp_path / "phone", user="kari", mic=mic)
    svc = service(tmp_path)
    try:
        await svc.start()
        await phone.start()
        await phone.dial(svc.uri)
        await phone.wait_event("CALL_ESTABLISHED", 20)

        seen: dict = {}

        async def two_fields_saved():
            calls = (await svc.get("/api/calls"))["calls"]
            if not calls:
                return None
            record = seen["record"] = await svc.get(f"/api/calls/{calls[0]['call_id']}")
            fields = (record["intake"] or {}).get("fields", {})
            return record if {"personal_id", "postal_code"} <= set(fields) else None

        before = await wait_for(two_fields_saved, 120, "the ID and postal code to be saved",
                                lambda: f"{svc.log()[-3000:]}\nthe call so far: {seen.get('record')}")
        svc.signal(signal.SIGKILL, group=True)
        await svc.wait(10)
        await phone.hangup()

        await svc.start()
        after = await svc.get(f"/api/calls/{before['call_id']}")
    finally:
        await phone.stop()
        await svc.stop()
    assert after["status"] == "interrupted"
    assert after["intake"]["status"] == "incomplete"
    for name, value in before["intake"]["fields"].items():
        assert after["intake"]["fields"][name] == value
    caller_turns = [t["text"] for t in after["turns"] if t["speaker"] == "caller"]
    assert caller_turns == [t["text"] for t in before["turns"] if t["speaker"] == "caller"] and caller_turns


async def test_sigterm_refuses_new_calls_ends_lingering_ones_politely_and_exits_0(tmp_path):
    stays = BaresipAgent(tmp_path / "stays", user="stays", mic=None)
    late = BaresipAgent(tmp_path / "late", user="late", mic=None)
    svc = service(tmp_path, drain_s=4.0)
    try:
        await svc.start()
        await asyncio.gather(stays.start(), late.start())
        await stays.dial(svc.uri)
        await stays.wait_event("CALL_ESTABLISHED", 20)
        svc.signal(signal.SIGTERM)
        await asyncio.sleep(1.0)
        await late.dial(svc.uri)
        refused = await late.wait_event("CALL_CLOSED", 20)
        await stays.wait_event("CALL_CLOSED", 40)
        assert await svc.wait(60) == 0
        await svc.start()
        [summary] = (await svc.get("/api/calls"))["calls"]
        record = await svc.get(f"/api/calls/{summary['call_id']}")
    finally:
        await asyncio.gather(stays.stop(), late.stop(), return_exceptions=True)
        await svc.stop()
    assert "503" in refused.data.get("param", ""), refused.data
    assert record["status"] == "ended" and record["caller_id"] == "stays"
    bot = [t for t in record["turns"] if t["speaker"] == "bot"]
    assert bot[-1]["text"].startswith("We are sorry, we have to end this call")


async def test_a_second_sigterm_ends_calls_at_once_and_still_saves_them(tmp_path):
    stays = BaresipAgent(tmp_path / "stays", user="stays", mic=None)
    svc = service(tmp_path, drain_s=600.0)
    try:
        await svc.start()
        await stays.start()
        await stays.dial(svc.uri)
        await stays.wait_event("CALL_ESTABLISHED", 20)
        assert (await svc.get("/healthz"))["status"] == "ok"
        svc.signal(signal.SIGTERM)
        await asyncio.sleep(1.0)
        svc.signal(signal.SIGTERM)
        await stays.wait_event("CALL_CLOSED", 20)
        assert await svc.wait(30) == 0
        await svc.start()
        [summary] = (await svc.get("/api/calls"))["calls"]
    finally:
        await stays.stop()
        await svc.stop()
    assert summary["status"] == "ended"


@pytest.mark.parametrize("mode", ["refer", "bridge"])
async def test_without_the_queue_key_zero_over_rfc4733_reaches_the_transfer_target_through_the_front(tmp_path, mode):
    """REFER: the caller's phone calls the target; bridge: a worker calls it through the front. With the
    queue on (the default) callers wait for an agent instead: tests/e2e/test_agents.py."""
    caller = BaresipAgent(tmp_path / "caller", user="ann", mic=None)
    target = BaresipAgent(tmp_path / "agent", user="agent", mic=None, auto_answer=True)
    svc = service(tmp_path, workers=2,
                  extra=f'[sip.transfer]\nmode = "{mode}"\ntarget_uri = "{target.uri}"\ntimeout_s = 20\n'
                        '[queue]\nenabled = false\n')
    try:
        await svc.start()
        await asyncio.gather(caller.start(), target.start())
        await caller.dial(svc.uri)
        await caller.wait_event("CALL_ESTABLISHED", 20)
        await asyncio.sleep(2.0)
        await caller.send_dtmf("0")
        incoming = await target.wait_event("CALL_ESTABLISHED", 40)
        await asyncio.sleep(1.0)
        await caller.hangup()

        async def ended():
            calls = (await svc.get("/api/calls"))["calls"]
            return calls if calls and calls[0]["status"] == "ended" else None

        [summary] = await wait_for(ended, 30, "the call to end", lambda: svc.log()[-4000:])
        record = await svc.get(f"/api/calls/{summary['call_id']}")
    finally:
        await asyncio.gather(caller.stop(), target.stop(), return_exceptions=True)
        await svc.stop()
    # the target sees the caller (REFER) or the service (bridge) calling
    assert incoming.data["peeruri"].startswith("sip:ann@" if mode == "refer" else "sip:voicebot@")
    assert record["outcome"] == "transferred" and record["transfer"]["reason"] == "caller_request"
    assert any(t["speaker"] == "caller" and t["text"] == "[DTMF 0]" for t in record["turns"])
