"""The settings that connect waiting callers to agents: ``[queue] enabled``, ``[sip.transfer] agent_domains``,
what the SIP front relays for them, the worker's own refusal of an agent's URI outside them, what the service
says about them at start, and the SIP URI an agent login is given."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.test_web_auth import CHEAP
from tests.unit.test_front_config import WORKERS, route
from voicebot.config import ConfigError, QueueSettings, Settings, load_settings
from voicebot.events import AudioFrame, DtmfTone, Transfer, TransportClosing
from voicebot.serve import _check_agents, agent_uri_check
from voicebot.sip.front import UriParts, render_dispatcher_list, render_front_config
from voicebot.sip.leg import TransferResult
from voicebot.sip.settings import SipError, SipSettings, SipTransferSettings, sip_uri_parts
from voicebot.sip.transport import SipTransport
from voicebot.storage import SqliteCallStore
from voicebot.web.accounts import AccountError, add_account
from voicebot.web.auth import Passwords

KAMAILIO = shutil.which("kamailio")


def settings_from(tmp_path: Path, text: str, env: dict | None = None):
    cfg = tmp_path / "voicebot.toml"
    cfg.write_text(text)
    return load_settings(cfg, env=env or {})


def test_the_queue_is_on_by_default_and_the_file_or_the_environment_turns_it_off(tmp_path):
    assert settings_from(tmp_path, "").queue.enabled
    assert not settings_from(tmp_path, "[queue]\nenabled = false\n").queue.enabled
    assert not settings_from(tmp_path, "", {"VOICEBOT_QUEUE": "off"}).queue.enabled


def test_agent_domains_load_from_the_file_and_bad_ones_are_one_line(tmp_path):
    s = settings_from(tmp_path, '[sip.transfer]\nagent_domains = ["PBX.example.org", "10.0.0.7:5070"]\n')
    assert s.sip.transfer.agent_domains == ("PBX.example.org", "10.0.0.7:5070")
    for bad in ('"pbx.example.org/x"', '"10.0.0.7:99999"', '"sip:anna@pbx"'):
        with pytest.raises(ConfigError, match="agent_domains") as e:
            settings_from(tmp_path, f"[sip.transfer]\nagent_domains = [{bad}]\n")
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("uri, admitted", [
    ("sip:anna@pbx.example.org", True),
    ("sip:anna@PBX.Example.org:5080;transport=tcp", True),  # any port on a bare host
    ("sips:anna@pbx.example.org", True),
    ("<sip:anna@pbx.example.org>", True),
    ("sip:anna@10.0.0.7:5070", True),
    ("sip:anna@10.0.0.7", False),  # 5060, not the listed port
    ("sip:anna@10.0.0.7:5071", False),
    ("sip:anna@evil.example.org", False),
    ("sip:anna@pbx.example.org.evil.net", False),
    ("tel:+358401234567", False),
    ("", False),
    # without a port a URI means 5061 over TLS (sips:, ;transport=tls), else 5060
    ("sips:anna@tls.example.org", True),
    ("sip:anna@tls.example.org;transport=tls", True),
    ("sips:anna@tls.example.org:5061", True),
    ("sip:anna@tls.example.org", False),
    ("sip:anna@plain.example.org", True),
    ("sip:anna@plain.example.org;transport=tcp", True),
    ("sips:anna@plain.example.org", False),
    ("sip:anna@plain.example.org;transport=tls", False),
])
def test_an_agent_s_uri_is_admitted_only_on_a_listed_host_and_port(uri, admitted):
    transfer = SipTransferSettings(agent_domains=("pbx.example.org", "10.0.0.7:5070", "tls.example.org:5061",
                                                  "plain.example.org:5060"))
    assert transfer.admits_agent(uri) is admitted
    assert (agent_uri_check(Settings(sip=SipSettings(transfer=transfer)))(uri) is None) is admitted


@pytest.mark.parametrize("uri, port", [
    ("sip:anna@pbx.example.org", 5060),
    ("sips:anna@pbx.example.org", 5061),
    ("SIPS:anna@pbx.example.org;transport=tcp", 5061),
    ("sip:anna@pbx.example.org;transport=tls", 5061),
    ("sip:anna@pbx.example.org;lr;Transport=TLS", 5061),
    ("sip:anna@pbx.example.org;transport=tcp", 5060),
    ("sip:anna@pbx.example.org?X-Note=transport=tls", 5060),  # a header, not the URI's transport
    ("sips:anna@[2001:db8::1]", 5061),
    ("sips:anna@pbx.example.org:5070", 5070),
])
def test_a_uri_without_a_port_means_5061_over_tls_and_5060_otherwise(uri, port):
    assert sip_uri_parts(uri)[2] == port
    assert UriParts.parse(uri).port == port


def test_with_no_agent_domains_no_agent_is_admitted_and_the_check_says_so():
    assert not SipTransferSettings().admits_agent("sip:anna@pbx.example.org")
    problem = agent_uri_check(Settings())("sip:anna@pbx.example.org")
    assert problem is not None and "agent_domains" in problem and "none set" in problem


def test_bridging_to_agents_takes_two_call_slots_per_call_even_without_a_fixed_target():
    bridge_to_agents = SipSettings(transfer=SipTransferSettings(mode="bridge", agent_domains=("pbx",)))
    assert bridge_to_agents.legs_per_call == 2 and bridge_to_agents.capacity == 2
    assert SipSettings(transfer=SipTransferSettings(mode="refer", agent_domains=("pbx",))).legs_per_call == 1
    assert SipSettings(transfer=SipTransferSettings(mode="bridge")).legs_per_call == 1


def test_the_front_lets_workers_call_phones_on_the_agent_domains(tmp_path):
    sip = SipSettings(host="127.0.0.1", port=5090, transfer=SipTransferSettings(
        mode="bridge", agent_domains=("PBX.example.org", "10.0.0.7:5070")))
    config = render_front_config(sip, WORKERS, dispatcher_list=tmp_path / "d.list")
    body = route(config, "AGENT_DOMAIN")
    assert 'if (($rz == "sip" || $rz == "sips") && $(rd{s.tolower}) == "pbx.example.org") {' in body
    assert '$(rd{s.tolower}) == "10.0.0.7" && $rp == 5070' in body
    assert body.count("return 1") == 2
    assert "$rz" not in route(render_front_config(SipSettings(host="127.0.0.1", port=5090), WORKERS,
                                                  dispatcher_list=tmp_path / "d.list"), "AGENT_DOMAIN")
    assert "route(TRANSFER_TARGET) || route(AGENT_DOMAIN)" in config


@pytest.mark.skipif(KAMAILIO is None, reason="kamailio is not installed (make debs installs it)")
def test_kamailio_accepts_a_config_with_agent_domains(tmp_path):
    listed = tmp_path / "dispatcher.list"
    listed.write_text(render_dispatcher_list(WORKERS))
    cfg = tmp_path / "kamailio.cfg"
    sip = SipSettings(host="127.0.0.1", port=5090, transfer=SipTransferSettings(
        mode="bridge", target_uri="sip:agents@pbx.example.org", agent_domains=("pbx.example.org", "10.0.0.7:5070")))
    cfg.write_text(render_front_config(sip, WORKERS, dispatcher_list=listed))
    proc = subprocess.run([KAMAILIO, "-c", "-f", str(cfg)], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]


#: what the front's real Kamailio is asked: each URI as a request URI, and whether a worker may call it
FRONT_CASES = [
    "sips:anna@tls.example.org", "sip:anna@tls.example.org;transport=tls", "sips:anna@tls.example.org:5061",
    "sip:anna@tls.example.org", "sip:anna@tls.example.org:5060", "sip:anna@plain.example.org",
    "sips:anna@plain.example.org", "sip:anna@plain.example.org;transport=tls", "sips:anna@plain.example.org:5060",
    "sip:anna@10.0.0.7:5070", "sips:anna@10.0.0.7:5070", "sips:anna@10.0.0.7",
    "sips:desk@target.example.org", "sip:desk@target.example.org;transport=tls", "sip:desk@target.example.org",
    "sips:desk@target.example.org:5060", "sips:other@target.example.org",
]
FRONT_PROBE_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
fork=no
listen=udp:127.0.0.1:%(port)d
loadmodule "sl.so"
loadmodule "pv.so"
request_route {
\tif (route(TRANSFER_TARGET) || route(AGENT_DOMAIN)) {
\t\tsl_send_reply("200", "relayed");
\t} else {
\t\tsl_send_reply("403", "refused");
\t}
\texit;
}
route[TRANSFER_TARGET] {
%(target)s}
route[AGENT_DOMAIN] {
%(agents)s}
"""


def _ask_kamailio(port: int, uri: str, guard_s: float = 10.0) -> int:
    """The status code Kamailio answers an OPTIONS to ``uri`` with (asked again until it listens)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        tag, reply_port = abs(hash(uri)), sock.getsockname()[1]
        request = (f"OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{reply_port};branch=z9hG4bK{tag}\r\n"
                   "Max-Forwards: 70\r\nTo: <sip:probe@127.0.0.1>\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\n"
                   f"Call-ID: {tag}@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        deadline = time.monotonic() + guard_s
        while time.monotonic() < deadline:
            sock.sendto(request, ("127.0.0.1", port))
            try:
                return int(sock.recv(4096).split(b" ", 2)[1])
            except TimeoutError:
                continue
    raise AssertionError(f"kamailio did not answer within {guard_s} s")


@pytest.mark.skipif(KAMAILIO is None, reason="kamailio is not installed (make debs installs it)")
def test_the_front_s_kamailio_lets_workers_call_the_uris_the_workers_admit_sips_and_tls_included(tmp_path):
    """Kamailio's own $rp says 5060 for a sips: URI without a port: the front's conditions must not trust it."""
    transfer = SipTransferSettings(mode="bridge", target_uri="sips:desk@target.example.org",
                                   agent_domains=("tls.example.org:5061", "plain.example.org:5060", "10.0.0.7:5070"))
    config = render_front_config(SipSettings(host="127.0.0.1", port=5090, transfer=transfer), WORKERS,
                                 dispatcher_list=tmp_path / "d.list")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "probe.cfg"
    cfg.write_text(FRONT_PROBE_CFG % {"port": port, "target": route(config, "TRANSFER_TARGET"),
                                      "agents": route(config, "AGENT_DOMAIN")})
    proc = subprocess.Popen([KAMAILIO, "-f", str(cfg), "-E", "-P", str(tmp_path / "pid")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        verdicts = {uri: _ask_kamailio(port, uri) == 200 for uri in FRONT_CASES}
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    target = UriParts.parse(transfer.target_uri)
    expected = {uri: transfer.admits_agent(uri) or UriParts.parse(uri) == target for uri in FRONT_CASES}
    assert verdicts == expected, err[-2000:]
    assert expected["sips:anna@tls.example.org"] and expected["sips:desk@target.example.org"]
    assert not expected["sips:anna@plain.example.org"] and not expected["sips:desk@target.example.org:5060"]


def test_a_bad_agent_domain_never_reaches_the_front_s_config(tmp_path):
    sip = SipSettings(host="127.0.0.1", port=5090, transfer=SipTransferSettings(agent_domains=('pbx"; exit;',)))
    with pytest.raises(SipError, match="agent_domains"):
        render_front_config(sip, WORKERS, dispatcher_list=tmp_path / "d.list")


# --------------------------------------------------------------------------- the worker's own check


class FakeLeg:
    """The parts of a LegHandle SipTransport.transfer uses."""

    remote_uri = "<sip:+358401234567@127.0.0.1>"
    sip_call_id = "call-1"

    def __init__(self, answer: TransferResult = TransferResult(True, 200, "OK")) -> None:
        self.referred: list[str] = []
        self.hung_up = False
        self.items: asyncio.Queue = asyncio.Queue()
        self._answer = answer

    async def blind_transfer(self, uri: str, timeout_s: float) -> TransferResult:
        self.referred.append(uri)
        return self._answer

    async def hangup(self) -> None:
        self.hung_up = True


async def test_a_worker_refers_a_caller_to_an_agent_on_an_agent_domain_and_to_no_other(caplog):
    transfer = SipTransferSettings(mode="refer", target_uri="sip:desk@pbx.example.org", agent_domains=("pbx.example.org",))
    leg = FakeLeg()
    assert await SipTransport(leg, transfer).transfer(Transfer("caller_request", ""), "sip:anna@pbx.example.org")
    assert leg.referred == ["sip:anna@pbx.example.org"]

    leg = FakeLeg()
    transport = SipTransport(leg, transfer)
    assert not await transport.transfer(Transfer("caller_request", ""), "sip:anna@evil.example.org")
    assert leg.referred == [] and not leg.hung_up and transport.ended_by == ""  # the caller stays with the bot
    assert "on none of [sip.transfer] agent_domains" in caplog.text

    leg = FakeLeg()  # the fixed target (no queue) needs no agent domain
    assert await SipTransport(leg, SipTransferSettings(target_uri="sip:desk@elsewhere.org")).transfer(
        Transfer("caller_request", ""))
    assert leg.referred == ["sip:desk@elsewhere.org"]


async def test_an_agent_s_phone_that_refuses_the_caller_leaves_them_with_the_bot_minus_what_they_said_meanwhile():
    transfer = SipTransferSettings(mode="refer", agent_domains=("pbx.example.org",))
    leg = FakeLeg(TransferResult(False, 486, "Busy Here"))
    frame = AudioFrame(b"\0" * 640, 16000, 12.0)
    for item in (frame, DtmfTone("5", 12.5), TransportClosing(13.0), frame):
        leg.items.put_nowait(item)
    transport = SipTransport(leg, transfer)
    assert not await transport.transfer(Transfer("caller_request", ""), "sip:anna@pbx.example.org")
    assert leg.referred == ["sip:anna@pbx.example.org"] and not leg.hung_up and transport.ended_by == ""
    assert [leg.items.get_nowait() for _ in range(leg.items.qsize())] == [TransportClosing(13.0)]

    leg = FakeLeg(TransferResult(False, 486, "Busy Here"))  # the fixed target: nobody else to try
    transport = SipTransport(leg, SipTransferSettings(target_uri="sip:desk@pbx.example.org"))
    assert not await transport.transfer(Transfer("caller_request", ""))
    assert leg.hung_up and transport.ended_by == "transfer_failed:486 Busy Here"


async def test_a_worker_bridges_to_an_agent_on_an_agent_domain_and_to_no_other():
    dialed: list[str] = []

    async def bridge(leg, uri: str) -> bool:
        dialed.append(uri)
        return True

    transfer = SipTransferSettings(mode="bridge", agent_domains=("10.0.0.7:5070",))
    transport = SipTransport(FakeLeg(), transfer, bridge=bridge)
    assert await transport.transfer(Transfer("caller_request", ""), "sip:anna@10.0.0.7:5070")
    assert transport.bridged and dialed == ["sip:anna@10.0.0.7:5070"]
    transport = SipTransport(FakeLeg(), transfer, bridge=bridge)
    assert not await transport.transfer(Transfer("caller_request", ""), "sip:anna@10.0.0.7:5060")
    assert not transport.bridged and dialed == ["sip:anna@10.0.0.7:5070"]


# --------------------------------------------------------------------------- what the service says at start


async def test_the_service_names_at_start_what_keeps_callers_from_agents(tmp_path, caplog):
    async with SqliteCallStore(tmp_path / "voicebot.sqlite3") as store:
        await store.save_agent("anna", "sip:anna@pbx.example.org", ["general"])
        await store.save_agent("olli", "sip:olli@elsewhere.example.org", ["general"])
        caplog.set_level("INFO", logger="voicebot")
        await _check_agents(Settings(), store)
        assert "agent_domains is empty: no agent can be connected" in caplog.text
        caplog.clear()
        on_pbx = Settings(sip=SipSettings(transfer=SipTransferSettings(agent_domains=("pbx.example.org",))))
        await _check_agents(on_pbx, store)
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warned == [("agent olli cannot take callers: sip:olli@elsewhere.example.org is on none of"
                           " [sip.transfer] agent_domains")]
        caplog.clear()
        await _check_agents(Settings(queue=QueueSettings(enabled=False)), store)
        assert [r.levelname for r in caplog.records] == ["INFO"]


async def test_an_agent_login_needs_a_sip_uri_the_service_can_dial_or_none_yet(tmp_path):
    async with SqliteCallStore(tmp_path / "voicebot.sqlite3") as store:
        passwords = Passwords(CHEAP)
        for bad in ("anna@pbx.example.org", "tel:+358401234567", "sip:"):
            with pytest.raises(AccountError, match="SIP URI"):
                await add_account(store, passwords, "anna", "agent", "correct horse battery", sip_uri=bad)
        assert await store.get_user("anna") is None
        made = await add_account(store, passwords, "anna", "agent", "correct horse battery",
                                 sip_uri="sip:anna@pbx.example.org:5070")
        assert made.agent.sip_uri == "sip:anna@pbx.example.org:5070"
        assert (await add_account(store, passwords, "scraper", "agent", "correct horse battery")).agent.sip_uri == ""
