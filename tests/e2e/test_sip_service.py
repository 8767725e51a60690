"""The phone service through real parts: the PJSIP service in-process, Debian's baresip as the
caller (and as the transfer target), the real recognizer and synthesizer, the SQLite store and
the HTTP API the results are read back from.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import numpy as np
import pytest
import soundfile

from tests.e2e.baresip_agent import BaresipAgent, free_udp_tcp_port, mic_wav
from voicebot.app import Runtime, open_runtime
from voicebot.audio.wav import load_wav, write_wav
from voicebot.config import load_settings
from voicebot.metrics import CallMetrics
from voicebot.privacy import mask_json
from voicebot.sip.service import SipService, open_sip_service
from voicebot.sip.settings import SipRegistration, SipSettings, SipTransferSettings
from voicebot.storage import SqliteCallStore
from voicebot.storage.records import User
from voicebot.storage.recorder import StoreRecorder
from voicebot.web import run_http
from voicebot.web.accounts import issue_token
from voicebot.web.api import make_app

pytestmark = [pytest.mark.slow, pytest.mark.pjsip]

#: the recognizer the replay e2e tests use too
ENGINE = "pocketsphinx"
SAMPLES = ("s01_hours", "s05_person", "s09_intake", "s10_phone_hangup")


@dataclass
class Stack:
    sip: SipService
    runtime: Runtime
    api_url: str
    #: a supervisor's API token (the API needs a login)
    token: str

    @property
    def uri(self) -> str:
        assert self.sip.address is not None
        return f"sip:voicebot@127.0.0.1:{self.sip.address.port}"

    async def get(self, path: str) -> dict:
        async with aiohttp.ClientSession() as http:
            async with http.get(self.api_url + path, headers={"Authorization": f"Bearer {self.token}"}) as resp:
                assert resp.status == 200, await resp.text()
                return await resp.json()

    async def ended_calls(self, count: int, timeout_s: float = 30.0) -> list[dict]:
        """The stored records of the first ``count`` calls to end, read back through the API."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            calls = (await self.get("/api/calls?limit=50"))["calls"]
            ended = [c for c in calls if c["status"] == "ended"]
            if len(ended) >= count:
                return [await self.get(f"/api/calls/{c['call_id']}") for c in ended]
            assert loop.time() < deadline, f"only {len(ended)} of {count} calls ended: {calls}"
            await asyncio.sleep(0.25)


@contextlib.asynccontextmanager
async def sip_stack(tmp_path: Path, **sip: object) -> AsyncIterator[Stack]:
    """Store, HTTP API, runtime (real engines) and the SIP service on a free port of 127.0.0.1."""
    settings = load_settings(env={}, overrides={("asr", "engine"): ENGINE})
    settings = replace(settings, data_dir=tmp_path / "data")
    sip_settings = SipSettings(host="127.0.0.1", port=free_udp_tcp_port(), rtp_port=0, rtp_port_range=0, **sip)
    async with SqliteCallStore(tmp_path / "data" / "voicebot.sqlite3") as store:
        await store.add_user(User("sam", "supervisor", "$argon2id$not-used-here"))
        token, _ = await issue_token(store, "sam")
        metrics = CallMetrics()
        async with open_runtime(settings, StoreRecorder(store, metrics)) as runtime:
            async with run_http(make_app(store, metrics), port=0) as http:
                async with open_sip_service(runtime, sip_settings) as service:
                    yield Stack(service, runtime, http.url, token)


@contextlib.asynccontextmanager
async def agents(*agents: BaresipAgent) -> AsyncIterator[None]:
    try:
        await asyncio.gather(*(a.start() for a in agents))
        yield
    finally:
        await asyncio.gather(*(a.stop() for a in agents), return_exceptions=True)


async def voicebot_replay(wavs: list[Path]) -> dict[str, dict]:
    """`voicebot replay --json` on the WAVs (same engine), reports by call name."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicebot", "replay", "--json", "--jobs", "2", *map(str, wavs),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "VOICEBOT_ENGINE": ENGINE})
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    reports = [json.loads(line) for line in out.decode().splitlines()]
    return {Path(r["call"]).stem: r for r in reports}


def intake_without_reference(record: dict) -> dict | None:
    """The intake as the API shows it (identity codes masked), without the reference number."""
    intake = mask_json(record["intake"])
    return None if intake is None else {k: v for k, v in intake.items() if k != "reference"}


def silence_wav(path: Path, seconds: float, rate_hz: int = 16000) -> Path:
    write_wav(path, np.zeros(int(seconds * rate_hz), np.int16), rate_hz)
    return path


def tone_wav(path: Path, hz: float, seconds: float, rate_hz: int = 16000) -> Path:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    write_wav(path, (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16), rate_hz)
    return path


def band_level_db(samples: np.ndarray, rate_hz: int, hz: float) -> float:
    """Energy near ``hz`` relative to the whole signal, in dB."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate_hz)
    band = spectrum[(freqs > hz - 30) & (freqs < hz + 30)].sum()
    return 10 * np.log10(band / max(spectrum.sum(), 1e-9) + 1e-12)


# --------------------------------------------------------------------------- the sample calls


def reported(record: dict) -> dict:
    """How a call ended: outcome, intents, transfer reason, and the intake's status and field names."""
    intake = intake_without_reference(record)
    if intake is not None:
        intake = {**intake, "fields": sorted(intake["fields"])}
    return {"outcome": record["outcome"], "intents": record["intents"],
            "transfer": (record["transfer"] or {}).get("reason"), "intake": intake}


async def test_sample_calls_over_sip_end_as_their_replay_does(sample_calls, tmp_path, caplog):
    """Four callers at once (G.722 over UDP and TCP, PCMU for the phone-line call): the stored records
    end as `voicebot replay` of the same WAVs does (outcome, intents, transfer reason, the intake's status
    and which fields it holds). The intake's values are not compared: the codecs change the audio, and
    with it now and then a digit (G.722 made s09's "zero zero one eight zero" "three oh zero one eight"
    in 1 of 5 runs; replaying the audio the service heard, from its recording, did not settle it: a shift
    of a fraction of a frame changes such a borderline decode as well).
    """
    caplog.set_level(logging.INFO, logger="voicebot.sip")
    wavs = {p.stem: p for p in sample_calls if p.stem in SAMPLES}
    loop = asyncio.get_running_loop()
    codecs = {"s01_hours": "G722", "s05_person": "G722", "s09_intake": "G722", "s10_phone_hangup": "PCMU"}
    mics = {name: await loop.run_in_executor(None, mic_wav, wavs[name], tmp_path / f"{name}.mic.wav", codecs[name])
            for name in SAMPLES}
    phones = {name: BaresipAgent(tmp_path / name, user=name.split("_")[0], mic=mics[name], codec=codecs[name])
              for name in SAMPLES}
    replays = await voicebot_replay([wavs[name] for name in SAMPLES])
    async with sip_stack(tmp_path) as stack:
        async with agents(*phones.values()):
            for name, phone in phones.items():
                await phone.dial(stack.uri + (";transport=tcp" if name == "s05_person" else ""))
            for name, phone in phones.items():
                await phone.wait_event("CALL_ESTABLISHED", 15)
            longest_s = max(soundfile.info(str(w)).duration for w in wavs.values())
            for phone in phones.values():
                await phone.wait_event("CALL_CLOSED", longest_s + 30)
            records = {r["caller_id"]: r for r in await stack.ended_calls(len(SAMPLES))}
        for name, phone in phones.items():
            assert f"Set audio encoder: {codecs[name]}" in phone.log()
    transports = {m.group(1): m.group(2) for m in
                  (re.search(r"from <sip:(\w+)@.*> over (\w+)", r.getMessage()) for r in caplog.records) if m}
    assert transports == {"s01": "UDP", "s05": "TCP", "s09": "UDP", "s10": "UDP"}
    assert set(records) == {p.user for p in phones.values()}
    for name, phone in phones.items():
        sip = records[phone.user]
        assert sip["call"].startswith(f"sip:{phone.user}@127.0.0.1")
        where = f"{name}: SIP {sip['turns']} / replay {replays[name]['turns']}"
        assert reported(sip) == reported(replays[name]), where
    s09 = records["s09"]
    assert s09["intake"]["status"] == "submitted" and s09["intake"]["reference"]
    assert stack.sip.counters.answered == len(SAMPLES) and stack.sip.counters.busy == 0


# --------------------------------------------------------------------------- keys and transfers


async def test_rfc4733_key_zero_is_a_caller_request_transfer_referred_to_the_target(tmp_path):
    caller = BaresipAgent(tmp_path / "caller", user="ann", mic=None)
    target = BaresipAgent(tmp_path / "agent", user="agent", mic=None, auto_answer=True)
    async with agents(caller, target):
        transfer = SipTransferSettings(mode="refer", target_uri=target.uri, timeout_s=20)
        async with sip_stack(tmp_path, transfer=transfer) as stack:
            await caller.dial(stack.uri)
            await caller.wait_event("CALL_ESTABLISHED", 15)
            await asyncio.sleep(2.0)
            await caller.send_dtmf("0")
            # The REFER sends the caller's phone to the target: the target sees a call from Ann.
            incoming = await target.wait_event("CALL_ESTABLISHED", 40)
            assert incoming.data["peeruri"].startswith("sip:ann@")
            assert any(e.type == "TRANSFER" for e in caller.events)
            [record] = await stack.ended_calls(1)
    assert record["outcome"] == "transferred"
    assert record["transfer"]["reason"] == "caller_request"
    assert any(t["speaker"] == "caller" and t["text"] == "[DTMF 0]" for t in record["turns"])


async def test_bridge_mode_joins_the_caller_with_the_target_through_the_service(tmp_path):
    loop = asyncio.get_running_loop()
    target_voice = await loop.run_in_executor(None, tone_wav, tmp_path / "tone.wav", 1000.0, 60.0)
    caller = BaresipAgent(tmp_path / "caller", user="bob", mic=None)
    target = BaresipAgent(tmp_path / "agent", user="agent", mic=target_voice, auto_answer=True)
    async with agents(caller, target):
        transfer = SipTransferSettings(mode="bridge", target_uri=target.uri, timeout_s=20)
        async with sip_stack(tmp_path, transfer=transfer) as stack:
            await caller.dial(stack.uri)
            await caller.wait_event("CALL_ESTABLISHED", 15)
            await asyncio.sleep(2.0)
            await caller.send_dtmf("0")
            incoming = await target.wait_event("CALL_ESTABLISHED", 40)
            assert incoming.data["peeruri"].startswith("sip:voicebot@")  # the service called the target
            await asyncio.sleep(3.0)  # the caller hears the target through the bridge
            assert stack.sip.active_calls == 1
            await caller.hangup()
            await target.wait_event("CALL_CLOSED", 10)  # the service hung up the other leg
            [record] = await stack.ended_calls(1)
            assert stack.sip.counters.bridged == 1
    assert record["outcome"] == "transferred" and record["transfer"]["reason"] == "caller_request"
    heard = caller.heard()
    assert heard is not None
    audio = load_wav(heard, sample_rate_hz=16000).samples
    last_2s = audio[-2 * 16000:]
    assert band_level_db(last_2s, 16000, 1000.0) > -3.0, "the target's 1 kHz tone did not reach the caller"


# --------------------------------------------------------------------------- the test caller


async def test_voicebot_call_speaks_a_wav_records_the_bot_and_sends_keys_by_sip_info(sample_calls, tmp_path):
    person = next(p for p in sample_calls if p.stem == "s05_person")
    loop = asyncio.get_running_loop()
    quiet = await loop.run_in_executor(None, silence_wav, tmp_path / "quiet.wav", 14.0)
    async with sip_stack(tmp_path) as stack:
        async def voicebot_call(*args: str) -> tuple[int, str, str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "voicebot", "call", stack.uri, *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            return proc.returncode, out.decode(), err.decode()

        (rc1, out1, err1), (rc2, out2, err2) = await asyncio.gather(
            voicebot_call("--play", str(person), "--record", str(tmp_path / "bot.wav")),
            voicebot_call("--play", str(quiet), "--dtmf", "0@2.5", "--dtmf-method", "info"),
        )
        records = await stack.ended_calls(2)
    assert rc1 == 0, err1
    assert rc2 == 0, err2
    assert "call: answered (G722/16000)" in err1 and "hanging up" in err1
    assert "sent DTMF 0 (info)" in err2
    assert json.loads(out2)["dtmf"] == ["0"]
    bot = load_wav(tmp_path / "bot.wav", sample_rate_hz=16000).samples
    assert len(bot) / 16000 > soundfile.info(str(person)).duration - 1.0
    assert np.sqrt(np.mean(bot.astype(np.float64) ** 2)) > 100, "the recording of the bot is silent"
    by_turns = sorted(records, key=lambda r: any(t["text"] == "[DTMF 0]" for t in r["turns"]))
    spoken, keyed = by_turns
    assert spoken["outcome"] == "transferred" and spoken["transfer"]["reason"] == "caller_request"
    assert keyed["outcome"] == "transferred" and keyed["transfer"]["reason"] == "caller_request"
    assert any(t["text"] == "[DTMF 0]" for t in keyed["turns"])
    assert all(r["caller_id"] == "voicebot-caller" for r in records)


async def test_voicebot_call_reports_bad_input_in_one_line(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio")
    for args, expected in (
        (["sip:x@127.0.0.1:9", "--play", str(junk)], "not a WAV file"),
        (["mailto:x@example.org", "--play", str(junk)], "not a SIP URI"),
        (["sip:x@127.0.0.1:9", "--play", str(junk), "--dtmf", "0@soon"], "not KEYS@SECONDS"),
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicebot", "call", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        assert proc.returncode == 2, err
        lines = err.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("voicebot: ") and expected in lines[0], lines


# --------------------------------------------------------------------------- limits and endings


async def test_calls_beyond_max_calls_get_486_busy_here(tmp_path):
    first = BaresipAgent(tmp_path / "first", user="first", mic=None)
    second = BaresipAgent(tmp_path / "second", user="second", mic=None)
    async with agents(first, second), sip_stack(tmp_path, max_calls=1) as stack:
        await first.dial(stack.uri)
        await first.wait_event("CALL_ESTABLISHED", 15)
        await second.dial(stack.uri)
        closed = await second.wait_event("CALL_CLOSED", 15)
        assert "486" in closed.data.get("param", ""), closed.data
        assert not any(e.type == "CALL_ESTABLISHED" for e in second.events)
        assert stack.sip.counters.busy == 1 and stack.sip.active_calls == 1
        quiet = silence_wav(tmp_path / "quiet.wav", 3.0)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicebot", "call", stack.uri, "--play", str(quiet),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 1
        assert "not answered: 486 Busy Here" in err.decode().splitlines()[-1]
        await first.hangup()
        [record] = await stack.ended_calls(1)
    assert record["caller_id"] == "first" and record["outcome"] == "abandoned"


async def test_a_caller_whose_rtp_stops_is_hung_up_after_the_media_timeout(tmp_path):
    caller = BaresipAgent(tmp_path / "caller", user="gone", mic=None)
    async with agents(caller), sip_stack(tmp_path, media_timeout_s=2.0) as stack:
        await caller.dial(stack.uri)
        await caller.wait_event("CALL_ESTABLISHED", 15)
        await asyncio.sleep(1.0)
        assert caller._proc is not None
        caller._proc.send_signal(signal.SIGKILL)  # no BYE, the RTP just stops
        [record] = await stack.ended_calls(1, timeout_s=20)
        assert stack.sip.active_calls == 0
    assert record["status"] == "ended" and record["outcome"] == "abandoned"
    assert record["caller_id"] == "gone"


async def test_draining_answers_503_and_waits_for_calls_in_progress(tmp_path):
    busy = BaresipAgent(tmp_path / "busy", user="busy", mic=None)
    late = BaresipAgent(tmp_path / "late", user="late", mic=None)
    async with agents(busy, late), sip_stack(tmp_path) as stack:
        await busy.dial(stack.uri)
        await busy.wait_event("CALL_ESTABLISHED", 15)
        drain = asyncio.ensure_future(stack.sip.drain(timeout_s=60))
        await asyncio.sleep(0.5)
        await late.dial(stack.uri)
        closed = await late.wait_event("CALL_CLOSED", 15)
        assert "503" in closed.data.get("param", ""), closed.data
        assert not drain.done()  # the call in progress is still going
        await busy.hangup()
        await asyncio.wait_for(drain, 15)
        [record] = await stack.ended_calls(1)
        assert stack.sip.counters.unavailable == 1
    assert record["caller_id"] == "busy"


async def test_drain_timeout_ends_calls_still_going_with_an_apology_and_saves_them(tmp_path):
    caller = BaresipAgent(tmp_path / "caller", user="stays", mic=None)
    async with agents(caller), sip_stack(tmp_path) as stack:
        await caller.dial(stack.uri)
        await caller.wait_event("CALL_ESTABLISHED", 15)
        await stack.sip.drain(timeout_s=1.0)
        await caller.wait_event("CALL_CLOSED", 10)
        [record] = await stack.ended_calls(1)
        closing = stack.runtime.scenario.prompt("service_closing")
    assert record["status"] == "ended"
    assert record["outcome"] == "completed"
    bot = [t for t in record["turns"] if t["speaker"] == "bot"]
    assert bot[-1]["text"] == closing and not bot[-1]["interrupted"]


# --------------------------------------------------------------------------- registration


class Registrar(asyncio.DatagramProtocol):
    """Just enough of a PBX's registrar to check the service's digest answer (RFC 2617, MD5)."""

    def __init__(self, user: str, password: str, realm: str = "pbx.test") -> None:
        self.user, self.password, self.realm = user, password, realm
        self.nonce = os.urandom(8).hex()
        self.authorized = asyncio.Event()
        self.seen: list[str] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        msg = data.decode(errors="replace")
        if not msg.startswith("REGISTER "):
            return
        self.seen.append(msg)
        head = {m.group(1).lower(): m.group(2).strip() for m in re.finditer(r"^([\w-]+):(.*)$", msg, re.M)}
        auth = head.get("authorization", "")
        if auth and self._valid(auth):
            self.authorized.set()
            self._reply(addr, head, "200 OK", [f"Contact: {head.get('contact', '')};expires=60", "Expires: 60"])
        else:
            self._reply(addr, head, "401 Unauthorized",
                        [f'WWW-Authenticate: Digest realm="{self.realm}", nonce="{self.nonce}", algorithm=MD5'])

    def _valid(self, auth: str) -> bool:
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', auth))
        if params.get("username") != self.user or params.get("nonce") != self.nonce:
            return False
        md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
        ha1 = md5(f"{self.user}:{self.realm}:{self.password}")
        ha2 = md5(f"REGISTER:{params.get('uri')}")
        if "qop" in params:
            expected = md5(f"{ha1}:{self.nonce}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}")
        else:
            expected = md5(f"{ha1}:{self.nonce}:{ha2}")
        return params.get("response") == expected

    def _reply(self, addr, head: dict, status: str, extra: list[str]) -> None:
        lines = [f"SIP/2.0 {status}"] + [f"{h}: {head[h.lower()]}" for h in ("Via", "From", "Call-ID", "CSeq")]
        lines.append(f"To: {head['to']};tag=reg1" if "tag=" not in head["to"] else f"To: {head['to']}")
        lines += extra + ["Content-Length: 0", "", ""]
        self.transport.sendto("\r\n".join(lines).encode(), addr)


async def test_the_service_registers_to_a_pbx_with_digest_auth(tmp_path):
    loop = asyncio.get_running_loop()
    registrar = Registrar("bot7", "s3cret")
    transport, _ = await loop.create_datagram_endpoint(lambda: registrar, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        reg = SipRegistration(registrar_uri=f"sip:127.0.0.1:{port}", username="bot7", password="s3cret")
        async with sip_stack(tmp_path, register=reg) as stack:
            await asyncio.wait_for(registrar.authorized.wait(), 15)
            for _ in range(40):
                if stack.sip.registration_state():
                    break
                await asyncio.sleep(0.1)
            assert stack.sip.registration_state() is True
    finally:
        transport.close()
    first, answered = registrar.seen[0], registrar.seen[1]
    assert "Authorization" not in first and "Authorization: Digest" in answered
    assert "s3cret" not in "".join(registrar.seen)
