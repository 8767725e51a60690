"""Waiting for a person through the real speech path: synthesized callers, PocketSphinx, espeak-ng prompts.

One caller waits in a local store's queue on the virtual clock and asks to be
called back; another is replayed by the real ``voicebot replay --server`` into a
running service's queue, where an agent takes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from voicebot.app import open_runtime
from voicebot.calls.memory import MemoryRecorder
from voicebot.calls.queue import StoreQueue
from voicebot.config import load_settings
from voicebot.metrics import CallMetrics
from voicebot.replay import replay_file
from voicebot.storage import SqliteCallStore
from voicebot.testing.callgen import build_call
from voicebot.web.accounts import add_account, issue_token
from voicebot.web.api import make_app
from voicebot.web.auth import Auth, Passwords
from voicebot.web.server import run_http

pytestmark = pytest.mark.slow

#: asks for a person, waits past the callback offer (60 s into the wait), asks for a callback, confirms the number
CALLBACK_CALLER = {"id": "q01_callback", "voice": "espeak:en-us", "rate": 160, "lead": 3.0, "steps": [
    {"say": "I want to speak to a person", "gap": 85.0},
    {"say": "call me back please", "gap": 15.0},
    {"say": "yes", "gap": 8.0},
]}
#: asks for a person and then waits quietly (``voicebot replay --stay`` keeps the line open longer)
WAITING_CALLER = {"id": "q02_waits", "voice": "espeak:en-us", "rate": 160, "lead": 2.0, "steps": [
    {"say": "I want to speak to a person", "gap": 3.0},
]}


def settings():
    return load_settings(None, env={}, overrides={("asr", "engine"): "pocketsphinx"})


async def test_a_caller_waits_hears_the_offer_and_gets_a_callback_to_the_confirmed_caller_id(tmp_path: Path):
    wav = await asyncio.to_thread(build_call, CALLBACK_CALLER, tmp_path)
    async with SqliteCallStore(tmp_path / "voicebot.sqlite3") as store:
        async with open_runtime(settings(), MemoryRecorder(), queue=StoreQueue(store)) as runtime:
            result = await replay_file(runtime, str(wav), caller_id="0401234567")
        assert result.error is None, result.error
        report = result.report
        said = [t["text"] for t in report["turns"] if t["speaker"] == "bot"]
        hold = runtime.scenario.hold
        transcript = json.dumps(report["turns"], indent=1)
        assert said[0].startswith("Welcome") and said[1] == runtime.scenario.prompt("transfer_caller_request")
        assert said[2] == "You are next in the queue." and said[3] == hold.prompt("wait_unknown"), transcript
        assert hold.prompt("callback_offer") in said, transcript
        assert hold.prompt("callback_confirm", number="0 4 0, 1 2 3, 4 5 6 7") in said, transcript
        assert said[-1] == hold.prompt("callback_thanks"), transcript
        asked = next(t for t in report["turns"] if t["intent"] == "callback")
        offered = next(t for t in report["turns"] if t["text"] == hold.prompt("callback_offer"))
        assert asked["start_s"] > offered["start_s"]
        assert report["outcome"] == "transferred" and report["transfer"]["reason"] == "caller_request"

        [callback] = await store.list_callbacks()
        assert (callback.call_id, callback.number, callback.queue, callback.state) == (
            report["call_id"], "0401234567", "general", "open")
        [entry] = await store.list_queue(states=["callback"])
        assert entry.call_id == report["call_id"] and entry.wait_s is not None


async def test_replay_server_puts_the_call_in_the_services_queue_and_an_agent_takes_it(tmp_path: Path):
    wav = await asyncio.to_thread(build_call, WAITING_CALLER, tmp_path)
    async with SqliteCallStore(tmp_path / "voicebot.sqlite3") as store:
        passwords = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        await add_account(store, passwords, "sam", "supervisor", "correct horse battery")
        await add_account(store, passwords, "alice", "agent", "correct horse battery", queues=["general"],
                          sip_uri="sip:alice@agents.example.org")
        await store.set_agent_state("alice", "available")
        token, _ = await issue_token(store, "sam")
        async with run_http(make_app(store, CallMetrics(), auth=Auth(store)), "127.0.0.1", 0) as endpoint:
            replay = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "voicebot", "replay", "--json", "--server", endpoint.url, "--stay", "120",
                str(wav), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "VOICEBOT_ENGINE": "pocketsphinx", "VOICEBOT_API_TOKEN": token})
            try:
                waiting = []
                while not waiting and replay.returncode is None:
                    await asyncio.sleep(0.5)
                    waiting = await store.list_waiting("general")
                assert waiting, (await replay.stderr.read()).decode()[-3000:]
                live = await store.get_call(waiting[0].call_id)
                assert live.status == "active" and any(t.intent == "agent" for t in live.report.turns)
                taken = await store.take_next("alice", ["general"])
                out, err = await asyncio.wait_for(replay.communicate(), 300)
            finally:
                if replay.returncode is None:
                    replay.kill()
                    await replay.wait()
        assert replay.returncode == 0, err.decode()[-3000:]
        report = json.loads(out.decode().splitlines()[0])
        said = [t["text"] for t in report["turns"] if t["speaker"] == "bot"]
        assert said[-1] == "An advisor is free now. Connecting you."
        assert report["outcome"] == "transferred" and report["call_id"] == taken.call_id
        entry = await store.get_queue_entry(taken.entry_id)
        assert entry.state == "connected" and entry.agent == "alice"
        stored = await store.get_call(taken.call_id)
        assert stored.status == "ended" and stored.report.turns[-1].text == said[-1]
