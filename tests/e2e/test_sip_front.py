"""The SIP front (Kamailio) through real parts: Debian's baresip stands in for the workers behind
it (auto-answering on ports of 127.0.0.1), for the callers in front of it and for the transfer
target; plain UDP/TCP sockets play scanners, flooders and senders of broken SIP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.baresip_agent import BaresipAgent, free_udp_tcp_port, running
from voicebot.audio.wav import load_wav, write_wav
from voicebot.sip.front import Front, FrontOptions, WorkerAddress, open_front
from voicebot.sip.settings import (
    SipRegistration,
    SipSecuritySettings,
    SipSettings,
    SipTransferSettings,
)

pytestmark = pytest.mark.slow

#: quick failover and probing: the tests stand in for workers that die or never were
OPTIONS = FrontOptions(children=2, worker_timeout_s=1.0, answer_timeout_s=10.0, probe_interval_s=1)
#: how long a probe waits for an answer that should come (the front answers in milliseconds)
ANSWER_S = 3.0
#: how long a probe listens for an answer that should not come
SILENCE_S = 1.0


@contextlib.asynccontextmanager
async def running_front(tmp_path: Path, workers: list[BaresipAgent] | list[int], *, port: int | None = None,
                        host: str = "127.0.0.1", options: FrontOptions = OPTIONS, **sip: object) -> AsyncIterator[Front]:
    ports = [w.sip_port if isinstance(w, BaresipAgent) else w for w in workers]
    settings = SipSettings(host=host, port=port or free_udp_tcp_port(), **sip)
    async with open_front(settings, [WorkerAddress(p) for p in ports], tmp_path / "front", options=options) as front:
        yield front


def worker(tmp_path: Path, name: str, **kwargs: object) -> BaresipAgent:
    """A stand-in worker: answers calls for "voicebot" (the user the front lets through) by itself."""
    return BaresipAgent(tmp_path / name, user="voicebot", mic=kwargs.pop("mic", None), auto_answer=True, **kwargs)


def service_uri(front: Front, user: str = "voicebot") -> str:
    return f"sip:{user}@{front.host}:{front.port}"


def tone_wav(path: Path, hz: float, seconds: float, rate_hz: int = 16000) -> Path:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    write_wav(path, (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16), rate_hz)
    return path


def loudest_hz(wav: Path) -> float:
    """The strongest frequency in the last two seconds of a recording."""
    audio = load_wav(wav, sample_rate_hz=16000).samples[-2 * 16000:].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(len(audio), 1 / 16000)[int(np.argmax(spectrum[1:])) + 1])


def incoming(agent: BaresipAgent) -> int:
    """Calls an agent took (established calls it did not dial)."""
    return sum(1 for e in agent.events if e.type == "CALL_ESTABLISHED" and e.data.get("direction") == "incoming")


async def took(agent: BaresipAgent, calls: int, timeout_s: float = 10.0) -> int:
    """Incoming calls an agent has taken once it has taken ``calls`` (or the wait is over): the
    callee's established event may come a moment after the caller's."""
    for _ in range(int(timeout_s / 0.05)):
        if incoming(agent) >= calls:
            break
        await asyncio.sleep(0.05)
    return incoming(agent)


def blocked(caplog: pytest.LogCaptureFixture, kind: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "voicebot.sip.front" and r.getMessage().startswith(f"blocked {kind} ")]


# --------------------------------------------------------------------------- a SIP client on a bare socket


def sip_request(method: str, ruri: str, *, local: tuple[str, int], transport: str = "UDP",
                contact: str | None = None, user_agent: str = "front-test", headers: tuple[str, ...] = (),
                to_tag: str | None = None, body: str = "") -> bytes:
    """A request as a phone would send it from ``local`` (a new Call-ID, tags and branch each time)."""
    ip, port = local
    to = f"<{ruri}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} {ruri} SIP/2.0",
             f"Via: SIP/2.0/{transport} {ip}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport",
             "Max-Forwards: 70", f"From: <sip:probe@{ip}>;tag={secrets.token_hex(4)}", f"To: {to}",
             f"Call-ID: {secrets.token_hex(8)}@{ip}", f"CSeq: 1 {method}",
             f"Contact: {contact or f'<sip:probe@{ip}:{port}>'}", f"User-Agent: {user_agent}", *headers]
    if body:
        lines.append("Content-Type: application/sdp")
    lines += [f"Content-Length: {len(body.encode())}", "", body]
    return "\r\n".join(lines).encode()


def headers_of(message: str) -> list[tuple[str, str]]:
    head = message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    return [(name.strip().lower(), value.strip()) for name, _, value in (line.partition(":") for line in head)]


async def read_message(reader: asyncio.StreamReader, timeout_s: float) -> str:
    """One SIP message from a TCP stream."""
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)).decode()
    length = int(dict(headers_of(head)).get("content-length", "0"))
    return head + (await reader.readexactly(length)).decode()


@dataclass
class Probe:
    """Sends hand-made SIP requests from a plain UDP socket and reads what comes back."""

    sock: socket.socket

    @classmethod
    def bind(cls, ip: str = "127.0.0.1") -> Probe:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((ip, 0))
        sock.setblocking(False)
        return cls(sock)

    @property
    def local(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def request(self, method: str, ruri: str, **kwargs: object) -> bytes:
        return sip_request(method, ruri, local=self.local, **kwargs)

    async def send(self, port: int, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, data, ("127.0.0.1", port))

    async def final(self, timeout_s: float) -> str | None:
        """The next final answer (status >= 200), whole; None when none comes in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (left := deadline - loop.time()) > 0:
            try:
                data, _ = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 65535), left)
            except TimeoutError:
                return None
            text = data.decode(errors="replace")
            m = re.match(r"SIP/2\.0 (\d{3})", text)
            if m and int(m.group(1)) >= 200:
                return text
        return None

    async def ask(self, port: int, method: str, ruri: str, timeout_s: float = ANSWER_S, **kwargs: object) -> str | None:
        await self.send(port, self.request(method, ruri, **kwargs))
        return await self.final(timeout_s)

    def close(self) -> None:
        self.sock.close()


class Listener(asyncio.DatagramProtocol):
    """An address with nothing behind it but OPTIONS answers (so the front's probes find it alive):
    shows which requests the front relays there."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[str] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        text = data.decode(errors="replace")
        if text.startswith("OPTIONS "):
            keep = [f"{n.title()}: {v}" for n, v in headers_of(text) if n in ("via", "from", "to", "call-id", "cseq")]
            self.transport.sendto("\r\n".join(["SIP/2.0 200 OK", *keep, "Content-Length: 0", "", ""]).encode(), addr)
        elif not text.startswith("SIP/2.0 "):
            self.requests.put_nowait(text)

    @property
    def local(self) -> tuple[str, int]:
        return self.transport.get_extra_info("sockname")


@contextlib.asynccontextmanager
async def listening() -> AsyncIterator[Listener]:
    transport, listener = await asyncio.get_running_loop().create_datagram_endpoint(
        Listener, local_addr=("127.0.0.1", 0))
    try:
        yield listener
    finally:
        transport.close()


def status(answer: str | None) -> int | None:
    return int(answer.split(" ", 2)[1]) if answer else None


@pytest.fixture
def probe():
    p = Probe.bind()
    yield p
    p.close()


# --------------------------------------------------------------------------- calls through the front


async def test_a_call_through_the_front_reaches_a_worker_audio_flows_both_ways_and_bye_ends_it(tmp_path):
    loop = asyncio.get_running_loop()
    caller_voice = await loop.run_in_executor(None, tone_wav, tmp_path / "caller.wav", 1000.0, 60.0)
    bot_voice = await loop.run_in_executor(None, tone_wav, tmp_path / "bot.wav", 1500.0, 60.0)
    bot = worker(tmp_path, "worker", mic=bot_voice)
    caller = BaresipAgent(tmp_path / "caller", user="ann", mic=caller_voice)
    async with running(bot, caller), running_front(tmp_path, [bot]) as front:
        await caller.dial(service_uri(front))
        await caller.wait_event("CALL_ESTABLISHED", 15)
        answered = await bot.wait_event("CALL_ESTABLISHED", 5)
        assert answered.data["peeruri"].startswith("sip:ann@127.0.0.1")
        await asyncio.sleep(3.0)
        await caller.hangup()
        await bot.wait_event("CALL_CLOSED", 10)  # the BYE went through the front
        await caller.wait_event("CALL_CLOSED", 10)
    assert front.blocks == {}
    heard_by_bot, heard_by_caller = bot.heard(), caller.heard()
    assert heard_by_bot is not None and heard_by_caller is not None
    assert abs(loudest_hz(heard_by_bot) - 1000.0) < 20, "the caller's tone did not reach the worker"
    assert abs(loudest_hz(heard_by_caller) - 1500.0) < 20, "the worker's tone did not reach the caller"


async def test_a_caller_who_gives_up_before_the_answer_cancels_the_call_at_the_worker(tmp_path):
    slow = BaresipAgent(tmp_path / "worker", user="voicebot", mic=None)  # rings, never answers
    caller = BaresipAgent(tmp_path / "caller", user="ann", mic=None)
    async with running(slow, caller), running_front(tmp_path, [slow]) as front:
        await caller.dial(service_uri(front))
        await slow.wait_event("CALL_INCOMING", 10)
        await caller.hangup()
        closed = await slow.wait_event("CALL_CLOSED", 10)
        await caller.wait_event("CALL_CLOSED", 10)
        assert not any(e.type == "CALL_ESTABLISHED" for e in slow.events)
    # baresip's words for a call CANCELled before it was answered
    assert closed.data.get("param") == "Connection reset by peer", closed.data


async def test_a_worker_s_refer_reaches_the_caller_through_the_front_and_sends_it_to_the_target(tmp_path):
    bot = worker(tmp_path, "worker")
    caller = BaresipAgent(tmp_path / "caller", user="ann", mic=None)
    target = BaresipAgent(tmp_path / "target", user="agent", mic=None, auto_answer=True)
    async with running(bot, caller, target), running_front(tmp_path, [bot]) as front:
        await caller.dial(service_uri(front))
        await caller.wait_event("CALL_ESTABLISHED", 15)
        await bot.wait_event("CALL_ESTABLISHED", 5)
        await bot.command("transfer", target.uri)  # a blind transfer, as the service's refer mode does
        taken = await target.wait_event("CALL_ESTABLISHED", 15)
        assert taken.data["peeruri"].startswith("sip:ann@127.0.0.1")
        assert any(e.type == "TRANSFER" for e in caller.events)
        await caller.hangup()
        await target.wait_event("CALL_CLOSED", 10)
        await bot.wait_event("CALL_CLOSED", 10)
    assert front.blocks == {}


async def test_a_caller_on_tcp_with_an_unreachable_contact_gets_the_bot_s_bye_on_its_own_connection(tmp_path):
    """What a phone behind NAT sees: its Contact names a port no one can reach, only its connection works."""
    bot = worker(tmp_path, "worker")
    async with running(bot), running_front(tmp_path, [bot]) as front:
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        local = writer.get_extra_info("sockname")
        offer = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                 "m=audio 40000 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n")
        writer.write(sip_request("INVITE", service_uri(front), local=(local[0], 9), transport="TCP",
                                 contact="<sip:ann@127.0.0.1:9;transport=tcp>", body=offer))
        answer = await read_message(reader, ANSWER_S)
        while status(answer) < 200:
            answer = await read_message(reader, 15)
        assert status(answer) == 200, answer
        fields = headers_of(answer)
        route_set = [v for n, v in fields if n == "record-route"][::-1]
        to = next(v for n, v in fields if n == "to")
        contact = re.search(r"<([^>]+)>", next(v for n, v in fields if n == "contact")).group(1)
        ack = sip_request("ACK", contact, local=(local[0], 9), transport="TCP",
                          headers=tuple(f"Route: {r}" for r in route_set)).decode()
        same_dialog = {"from": next(v for n, v in fields if n == "from"), "to": to,
                       "call-id": next(v for n, v in fields if n == "call-id")}
        ack = re.sub(r"^(From|To|Call-ID): .*$", lambda m: f"{m.group(1)}: {same_dialog[m.group(1).lower()]}",
                     ack, flags=re.MULTILINE)
        writer.write(ack.encode())
        await bot.wait_event("CALL_ESTABLISHED", 5)
        await bot.hangup()
        bye = await read_message(reader, 10)
        assert bye.startswith("BYE "), bye
        reply = ["SIP/2.0 200 OK", *(f"{n.title()}: {v}" for n, v in headers_of(bye)
                                     if n in ("via", "from", "to", "call-id", "cseq")), "Content-Length: 0", "", ""]
        writer.write("\r\n".join(reply).encode())
        await bot.wait_event("CALL_CLOSED", 10)
        writer.close()
        await writer.wait_closed()


async def test_a_front_on_every_interface_takes_calls_for_its_addresses_and_bye_finds_the_way_back(tmp_path):
    bot = worker(tmp_path, "worker")
    caller = BaresipAgent(tmp_path / "caller", user="ann", mic=None)
    async with running(bot, caller), running_front(tmp_path, [bot], host="0.0.0.0") as front:
        await caller.dial(service_uri(front))
        await caller.wait_event("CALL_ESTABLISHED", 15)
        await bot.hangup()  # the worker's BYE follows the route the front recorded
        await caller.wait_event("CALL_CLOSED", 10)
        await bot.wait_event("CALL_CLOSED", 10)
    assert front.blocks == {}


async def test_a_busy_worker_passes_the_call_to_the_next_one(tmp_path):
    busy = worker(tmp_path, "busy", max_calls=1)
    free = worker(tmp_path, "free")
    blocker = BaresipAgent(tmp_path / "blocker", user="blocker", mic=None)
    callers = [BaresipAgent(tmp_path / name, user=name, mic=None) for name in ("ann", "bob")]
    async with running(busy, free, blocker, *callers), running_front(tmp_path, [busy, free]) as front:
        await blocker.dial(busy.uri)  # straight to the worker: it has its one call
        await busy.wait_event("CALL_ESTABLISHED", 10)
        # Round robin over two workers: one of two calls in a row is offered to the busy one first.
        await callers[0].dial(service_uri(front))
        await callers[0].wait_event("CALL_ESTABLISHED", 15)
        await callers[1].dial(service_uri(front) + ";transport=tcp")
        await callers[1].wait_event("CALL_ESTABLISHED", 15)
        assert await took(free, 2) == 2 and incoming(busy) == 1
        assert "rejected call" in busy.log(), "no call was offered to the busy worker"
        for caller in callers:
            await caller.hangup()
        for caller in callers:
            await caller.wait_event("CALL_CLOSED", 10)


async def test_with_every_worker_busy_the_caller_gets_486(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="voicebot.sip.front")
    workers = [worker(tmp_path, f"w{i}", max_calls=1) for i in range(2)]
    blockers = [BaresipAgent(tmp_path / f"blocker{i}", user=f"blocker{i}", mic=None) for i in range(2)]
    caller = BaresipAgent(tmp_path / "caller", user="ann", mic=None)
    async with running(*workers, *blockers, caller), running_front(tmp_path, workers) as front:
        for blocker, w in zip(blockers, workers):
            await blocker.dial(w.uri)
            await w.wait_event("CALL_ESTABLISHED", 10)
        await caller.dial(service_uri(front))
        closed = await caller.wait_event("CALL_CLOSED", 15)
    assert closed.data.get("param") == "486 Busy Here", closed.data
    assert all("rejected call" in w.log() for w in workers)
    assert any("every worker busy" in r.getMessage() for r in caplog.records)


async def test_with_no_worker_alive_the_caller_gets_503(tmp_path, probe):
    nobody = [free_udp_tcp_port(), free_udp_tcp_port()]
    async with running_front(tmp_path, nobody) as front:
        answer = await probe.ask(front.port, "INVITE", service_uri(front), timeout_s=15)
    assert status(answer) == 503, answer


async def test_a_worker_that_starts_after_the_front_takes_calls_once_the_front_resets_its_workers(tmp_path, probe):
    late = worker(tmp_path, "late")
    caller = BaresipAgent(tmp_path / "caller", user="ann", mic=None)
    no_probes = replace(OPTIONS, probe_interval_s=600)  # nothing but the reset brings the worker back
    async with running(caller), running_front(tmp_path, [late], options=no_probes) as front:
        # the worker is not there yet: the call finds no one, and the worker leaves the rotation
        assert status(await probe.ask(front.port, "INVITE", service_uri(front), timeout_s=15)) == 503
        async with running(late):
            await caller.dial(service_uri(front))
            refused = await caller.wait_event("CALL_CLOSED", 15)
            assert refused.data.get("param") == "503 Service Unavailable", refused.data
            caller.events.clear()
            await front.reset_workers()
            await caller.dial(service_uri(front))
            await caller.wait_event("CALL_ESTABLISHED", 15)
            assert await took(late, 1) == 1
            await caller.hangup()
            await late.wait_event("CALL_CLOSED", 10)


# --------------------------------------------------------------------------- who may call, and how


async def test_unknown_users_get_404_foreign_domains_403_and_other_methods_405(tmp_path, probe, caplog):
    async with running_front(tmp_path, [free_udp_tcp_port()]) as front:
        port = front.port
        assert status(await probe.ask(port, "INVITE", service_uri(front, "nobody"))) == 404
        assert status(await probe.ask(port, "INVITE", "sip:voicebot@pbx.example.org")) == 403
        assert status(await probe.ask(port, "OPTIONS", f"sip:{front.host}:{port}")) == 200
        for method in ("REGISTER", "MESSAGE", "SUBSCRIBE"):
            answer = await probe.ask(port, method, service_uri(front))
            assert status(answer) == 405 and "Allow: INVITE" in answer, answer
        await asyncio.sleep(0.5)  # the log lines
    assert blocked(caplog, "unknown_user") and blocked(caplog, "foreign_domain")


async def test_scanners_get_no_answer_at_all_and_the_block_is_logged(tmp_path, probe, caplog):
    once_a_second = SipSecuritySettings(block_log_interval_s=1)
    async with running_front(tmp_path, [free_udp_tcp_port()], security=once_a_second) as front:
        scanners = (("OPTIONS", "friendly-scanner"), ("INVITE", "sipvicious 0.3.4"),
                    ("INVITE", "VaxSIPUserAgent/3.1"), ("OPTIONS", "sipcli/v1.8"))
        for method, agent in scanners:
            await probe.send(front.port, probe.request(method, service_uri(front), user_agent=agent))
        assert await probe.final(SILENCE_S) is None
        # the same socket without the scanner's name is answered: the silence was the block
        assert status(await probe.ask(front.port, "OPTIONS", service_uri(front))) == 200
        for _ in range(100):  # the first block is logged at once, the three others summed up after a second
            if front.blocks["scanner"] == 4:
                break
            await asyncio.sleep(0.1)
    first, summary = blocked(caplog, "scanner")
    # whichever of the four the front's processes got to first
    assert any(first.endswith(f"User-Agent '{agent}'") for _, agent in scanners), first
    assert summary == "blocked scanner from udp:127.0.0.1: 3 more in the 1 s after that"


async def test_digest_auth_challenges_lets_the_right_credentials_through_and_refuses_wrong_ones(tmp_path, probe,
                                                                                              caplog):
    security = SipSecuritySettings(auth_username="trunk", auth_password="s3cret", auth_realm="voicebot.test")
    bot = worker(tmp_path, "worker")
    right = BaresipAgent(tmp_path / "right", user="ann", mic=None, account_params=("auth_user=trunk",
                                                                                   "auth_pass=s3cret"))
    wrong = BaresipAgent(tmp_path / "wrong", user="eve", mic=None, account_params=("auth_user=trunk",
                                                                                   "auth_pass=guess"))
    async with running(bot, right, wrong), running_front(tmp_path, [bot], security=security) as front:
        challenge = await probe.ask(front.port, "INVITE", service_uri(front))
        assert status(challenge) == 401, challenge
        assert re.search(r'^WWW-Authenticate: Digest realm="voicebot\.test"', challenge, re.MULTILINE), challenge
        await right.dial(service_uri(front))
        await right.wait_event("CALL_ESTABLISHED", 15)
        assert await took(bot, 1) == 1
        await wrong.dial(service_uri(front))
        refused = await wrong.wait_event("CALL_CLOSED", 15)
        assert incoming(bot) == 1
        await right.hangup()
        await bot.wait_event("CALL_CLOSED", 10)
    assert refused.data.get("param") == "403 Forbidden", refused.data
    assert "user 'trunk'" in blocked(caplog, "auth_failed")[0]


# --------------------------------------------------------------------------- no relaying


async def test_a_worker_may_call_the_transfer_target_and_nothing_else(tmp_path, probe, caplog):
    front_port = free_udp_tcp_port()
    target = BaresipAgent(tmp_path / "target", user="agent", mic=None, auto_answer=True)
    stranger = BaresipAgent(tmp_path / "stranger", user="someone", mic=None, auto_answer=True)
    # the worker's calls go out through the front, as the service's workers' do
    bridging = worker(tmp_path, "worker", account_params=(f'outbound="sip:127.0.0.1:{front_port};lr"',))
    async with running(target, stranger, bridging):
        transfer = SipTransferSettings(mode="bridge", target_uri=target.uri)
        async with running_front(tmp_path, [bridging], port=front_port, transfer=transfer) as front:
            await bridging.dial(stranger.uri)
            refused = await bridging.wait_event("CALL_CLOSED", 15)
            assert refused.data.get("param") == "403 Forbidden", refused.data
            assert incoming(stranger) == 0
            await bridging.dial(target.uri)
            taken = await target.wait_event("CALL_ESTABLISHED", 15)
            assert taken.data["peeruri"] == bridging.uri
            await bridging.hangup()
            await target.wait_event("CALL_CLOSED", 10)  # the BYE followed the Record-Route
            # From outside, the target is just a foreign address: the front relays nothing there.
            assert status(await probe.ask(front.port, "INVITE", target.uri)) == 403
            # Nor does a made-up in-dialog request with a Route through the front reach it (from
            # another address: blocks are logged once per source and kind).
            forger = Probe.bind("127.0.0.4")
            try:
                forged = await forger.ask(front.port, "BYE", target.uri, to_tag="x1",
                                          headers=(f"Route: <sip:127.0.0.1:{front.port};lr>",))
            finally:
                forger.close()
            assert status(forged) == 403, forged
            await asyncio.sleep(0.5)
    assert incoming(stranger) == 0
    refusals = blocked(caplog, "relay_refused")
    assert any("from a worker to " + stranger.uri in r for r in refusals), refusals
    assert any("in-dialog BYE" in r for r in refusals), refusals


async def test_a_worker_registers_through_the_front_with_the_registrar_only_and_the_pbx_calls_come_in(tmp_path):
    async with listening() as fake_worker, listening() as registrar:
        reg = SipRegistration(registrar_uri=f"sip:127.0.0.1:{registrar.local[1]}", username="bot7", password="pw")
        async with running_front(tmp_path, [fake_worker.local[1]], register=reg) as front:
            send = fake_worker.transport.sendto
            send(sip_request("REGISTER", reg.registrar_uri, local=fake_worker.local), ("127.0.0.1", front.port))
            relayed = await asyncio.wait_for(registrar.requests.get(), ANSWER_S)
            assert relayed.startswith(f"REGISTER {reg.registrar_uri} SIP/2.0")
            send(sip_request("REGISTER", "sip:127.0.0.1:9", local=fake_worker.local), ("127.0.0.1", front.port))
            # the PBX calls the registered user at the front: a worker gets the call
            registrar.transport.sendto(sip_request("INVITE", f"sip:bot7@127.0.0.1:{front.port}",
                                                   local=registrar.local), ("127.0.0.1", front.port))
            offered = await asyncio.wait_for(fake_worker.requests.get(), ANSWER_S)
            assert offered.startswith(f"INVITE sip:bot7@127.0.0.1:{front.port} SIP/2.0"), offered
            await asyncio.sleep(0.5)
            while not registrar.requests.empty():  # retransmissions of the one relayed REGISTER, nothing else
                assert registrar.requests.get_nowait().startswith(f"REGISTER {reg.registrar_uri} SIP/2.0")
            assert front.blocks == {"relay_refused": 1}


# --------------------------------------------------------------------------- floods and garbage


def garbage(probe: Probe, front_port: int, count: int) -> list[bytes]:
    """Datagrams that are not SIP, or SIP broken in the ways scanners and fuzzers break it."""
    rng = np.random.default_rng(7)
    good = probe.request("INVITE", f"sip:voicebot@127.0.0.1:{front_port}").decode()
    broken = [
        good.replace("Via: SIP/2.0/UDP", "Via: garbage"),
        good.replace("CSeq: 1 INVITE", "CSeq: x INVITE"),
        good.replace("CSeq: 1 INVITE", "CSeq: 1 BYE"),
        good.replace("Content-Length: 0", "Content-Length: 9999"),
        good.replace("SIP/2.0\r\n", "SIP/7.0\r\n", 1),
        "\r\n".join(line for line in good.split("\r\n") if not line.startswith(("From:", "Call-ID:"))),
        good.replace("From: <sip:probe", "From: <<<sip:::probe"),
        good[: len(good) // 2],
        "INVITE sip:voicebot@127.0.0.1 SIP/2.0\r\n" + "X-Long: " + "a" * 3000 + "\r\n\r\n",
        "SIP/2.0 200 OK\r\nVia: nowhere\r\n\r\n",
    ]
    out = []
    for i in range(count):
        if i % 3 == 0:
            out.append(rng.integers(0, 256, int(rng.integers(20, 1400)), dtype=np.uint8).tobytes())
        else:
            out.append(broken[i % len(broken)].encode())
    return out


async def test_a_burst_of_malformed_sip_leaves_the_front_alive_and_answering(tmp_path, probe, caplog):
    lenient = SipSecuritySettings(rate_limit_requests=10_000)
    async with running_front(tmp_path, [free_udp_tcp_port()], security=lenient) as front:
        for data in garbage(probe, front.port, 300):
            await probe.send(front.port, data)
        # and over TCP: a message cut short (Content-Length promises more), then plain junk
        for chunk in (probe.request("INVITE", service_uri(front)).replace(b"Content-Length: 0",
                                                                          b"Content-Length: 500") + b"v=0\r\n",
                      os.urandom(2000)):
            _, writer = await asyncio.open_connection("127.0.0.1", front.port)
            writer.write(chunk)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        answer = None
        for _ in range(3):  # the answer must come, though maybe after the backlog of junk
            answer = await probe.ask(front.port, "OPTIONS", service_uri(front))
            if answer is not None:
                break
        assert status(answer) == 200, answer
        assert front.running
        await asyncio.sleep(0.5)
        assert front.blocks["malformed"] >= 1
    assert blocked(caplog, "malformed")


async def test_a_flood_from_one_source_is_rate_limited_while_another_source_is_answered(tmp_path, caplog):
    strict = SipSecuritySettings(rate_limit_requests=20, rate_limit_interval_s=60)
    flooder, other = Probe.bind("127.0.0.2"), Probe.bind("127.0.0.3")
    try:
        async with running_front(tmp_path, [free_udp_tcp_port()], security=strict) as front:
            sent = 100
            for _ in range(sent):
                await flooder.send(front.port, flooder.request("OPTIONS", service_uri(front)))
            answered = 0
            while await flooder.final(SILENCE_S) is not None:
                answered += 1
            # at most two windows' worth got through (the flood may straddle a window's end)
            assert 0 < answered <= 2 * strict.rate_limit_requests < sent
            assert status(await other.ask(front.port, "OPTIONS", service_uri(front))) == 200
            await asyncio.sleep(0.5)
            assert front.blocks["rate_limit"] >= 1
    finally:
        flooder.close()
        other.close()
    [line] = blocked(caplog, "rate_limit")  # one line per source and interval, not one per request
    assert line.startswith("blocked rate_limit from udp:127.0.0.2:") and "more than 20 requests in 60 s" in line
