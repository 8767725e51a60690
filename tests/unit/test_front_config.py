"""The SIP front's Kamailio config: what the settings put in it, and that Kamailio accepts it."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from voicebot.sip import front as front_module
from voicebot.sip.front import (
    Front,
    FrontOptions,
    WorkerAddress,
    listen_addresses,
    open_front,
    render_dispatcher_list,
    render_front_config,
)
from voicebot.sip.settings import (
    SipError,
    SipRegistration,
    SipSecuritySettings,
    SipSettings,
    SipTransferSettings,
)

KAMAILIO = shutil.which("kamailio")
needs_kamailio = pytest.mark.skipif(KAMAILIO is None, reason="kamailio is not installed (make debs installs it)")
WORKERS = [WorkerAddress(5071), WorkerAddress(5072), WorkerAddress(5073)]


def render(tmp_path: Path, settings: SipSettings) -> str:
    return render_front_config(settings, WORKERS, dispatcher_list=tmp_path / "dispatcher.list")


def route(config: str, name: str) -> str:
    """The body of ``route[name]`` in a rendered config."""
    m = re.search(r"^route\[" + name + r"\] \{\n(.*?)^\}", config, re.MULTILINE | re.DOTALL)
    assert m, f"no route[{name}]"
    return m.group(1)


def base(**sip: object) -> SipSettings:
    return SipSettings(**{"host": "127.0.0.1", "port": 5090, **sip})


# --------------------------------------------------------------------------- content


def test_invites_are_taken_for_the_service_user_and_the_configured_users_only(tmp_path):
    config = render(tmp_path, base(user="bot", security=SipSecuritySettings(users=("voicebot", "benefits"))))
    users = re.findall(r'\$rU == "([^"]+)"', route(config, "KNOWN_USER"))
    assert users == ["bot", "voicebot", "benefits"]


def test_own_addresses_and_configured_domains_are_the_domains_invites_may_name(tmp_path):
    config = render(tmp_path, base(security=SipSecuritySettings(domains=("Voice.Example.org",))))
    body = route(config, "OWN_DOMAIN")
    assert "uri == myself" in body
    assert '$(rd{s.tolower}) == "voice.example.org"' in body


def test_digest_auth_is_off_by_default_and_on_with_credentials_without_the_password_in_the_config(tmp_path):
    assert "#!define WITH_AUTH" not in render(tmp_path, base())
    security = SipSecuritySettings(auth_username="trunk", auth_password="s3cret pass", auth_realm="voice")
    config = render(tmp_path, base(security=security))
    ha1 = hashlib.md5(b"trunk:voice:s3cret pass").hexdigest()
    assert "#!define WITH_AUTH" in config
    assert f'#!define AUTH_HA1 "{ha1}"' in config and '#!define AUTH_USER "trunk"' in config
    assert "s3cret" not in config


def test_workers_may_call_the_transfer_target_only_and_none_without_one(tmp_path):
    assert "$rz" not in route(render(tmp_path, base()), "TRANSFER_TARGET")
    transfer = SipTransferSettings(mode="bridge", target_uri="sip:Agents@PBX.example.org;transport=udp")
    body = route(render(tmp_path, base(transfer=transfer)), "TRANSFER_TARGET")
    assert '$rz == "sip" && $rU == "Agents" && $(rd{s.tolower}) == "pbx.example.org" && ($rp == 5060 && !(' in body


def test_a_registrar_lets_its_user_call_in_its_register_out_and_its_address_past_the_rate_limit(tmp_path):
    reg = SipRegistration(registrar_uri="sip:10.1.2.3:5070", username="bot7", password="x")
    config = render(tmp_path, base(register=reg))
    assert '$rU == "bot7"' in route(config, "KNOWN_USER")
    assert '$rU == $null && $(rd{s.tolower}) == "10.1.2.3" && $rp == 5070' in route(config, "REGISTRAR")
    assert 'is_in_subnet("$si", "10.1.2.3/32")' in route(config, "RATE_EXEMPT")


def test_scanner_user_agents_become_one_lower_case_regex_with_literal_dots(tmp_path):
    security = SipSecuritySettings(scanner_user_agents=("friendly-scanner", "Evil.Scan/1"))
    config = render(tmp_path, base(security=security))
    assert '#!define SCANNER_UA_RE "friendly-scanner|evil[.]scan/1"' in config
    no_list = render(tmp_path, base(security=SipSecuritySettings(scanner_user_agents=())))
    assert "#!define SCANNER_UA_RE" not in no_list


def test_rate_limit_and_timeouts_come_from_the_settings(tmp_path):
    security = SipSecuritySettings(rate_limit_requests=7, rate_limit_interval_s=3, rate_limit_exempt=("192.0.2.0/24",))
    config = render_front_config(base(security=security), WORKERS, dispatcher_list=tmp_path / "d.list",
                                 options=FrontOptions(worker_timeout_s=1.5, answer_timeout_s=9))
    assert '#!substdef "!RATE_REQUESTS!7!"' in config and '#!substdef "!RATE_INTERVAL_S!3!"' in config
    assert '#!substdef "!WORKER_TIMEOUT_MS!1500!"' in config and '#!substdef "!ANSWER_TIMEOUT_MS!9000!"' in config
    assert 'is_in_subnet("$si", "192.0.2.0/24")' in route(config, "RATE_EXEMPT")


def test_the_front_listens_on_its_host_and_on_loopback_for_the_workers_advertising_the_public_address(tmp_path):
    config = render(tmp_path, SipSettings(host="192.0.2.10", port=5060, tcp=False, public_address="203.0.113.7"))
    listens = re.findall(r"^listen=(.*)$", config, re.MULTILINE)
    assert listens == ["udp:127.0.0.1:5060", "udp:192.0.2.10:5060 advertise 203.0.113.7:5060"]
    assert "disable_tcp=yes" in config
    assert "alias=203.0.113.7:5060" in config


def test_every_interface_means_one_socket_per_address_of_this_machine_never_a_wildcard_one(tmp_path):
    config = render(tmp_path, SipSettings(host="0.0.0.0", port=5060, udp=False))
    listens = re.findall(r"^listen=(.*)$", config, re.MULTILINE)
    assert listens[0] == "tcp:127.0.0.1:5060"
    assert listens == [f"tcp:{a}:5060" for a in listen_addresses("0.0.0.0")]
    assert not any("0.0.0.0" in line for line in listens)


def test_no_generated_name_is_part_of_another_since_substdef_replaces_text(tmp_path):
    config = render(tmp_path, COMBINATIONS["auth, transfer target, domains, exempt sources"])
    names = re.findall(r'^#!(?:substdef "!|define )(\w+)', config, re.MULTILINE)
    assert len(names) > 10
    assert not [(a, b) for a in names for b in names if a != b and a in b]


def test_every_worker_is_in_the_dispatcher_list():
    lines = [line for line in render_dispatcher_list(WORKERS).splitlines() if not line.startswith("#")]
    assert lines == ["1 sip:127.0.0.1:5071 0 0", "1 sip:127.0.0.1:5072 0 0", "1 sip:127.0.0.1:5073 0 0"]


def test_settings_the_front_cannot_use_are_refused_in_one_line(tmp_path):
    for security, expected in (
        (SipSecuritySettings(users=("bad user",)), "not a SIP user part"),
        (SipSecuritySettings(domains=("evil.org/x",)), "not a host name"),
        (SipSecuritySettings(auth_username="only-user"), "both auth_username and auth_password"),
        (SipSecuritySettings(auth_username='a"b', auth_password="x"), "quotes"),
        (SipSecuritySettings(rate_limit_exempt=("10.0.0.300",)), "not an address or network"),
        (SipSecuritySettings(rate_limit_requests=0), "at least 1"),
        (SipSecuritySettings(scanner_user_agents=("sip(vicious",)), "may only have"),
    ):
        with pytest.raises(SipError, match=expected) as e:
            render(tmp_path, base(security=security))
        assert "\n" not in str(e.value)
    with pytest.raises(SipError, match="at least one worker"):
        render_front_config(base(), [], dispatcher_list=tmp_path / "d.list")


# --------------------------------------------------------------------------- Kamailio's own check


COMBINATIONS = {
    "defaults": base(),
    "auth, transfer target, domains, exempt sources": base(
        security=SipSecuritySettings(users=("voicebot", "intake"), domains=("voice.example.org",),
                                     auth_username="trunk", auth_password="pw", rate_limit_exempt=("10.0.0.0/8",)),
        transfer=SipTransferSettings(mode="bridge", target_uri="sip:agents@pbx.example.org:5080")),
    "udp only, no scanner list": base(tcp=False, security=SipSecuritySettings(scanner_user_agents=())),
    "tcp only, target without user": base(udp=False, transfer=SipTransferSettings(target_uri="sip:10.0.0.9")),
    "registrar": base(register=SipRegistration(registrar_uri="sip:10.1.2.3", username="bot7", password="x")),
    "every interface, a public address": SipSettings(host="0.0.0.0", port=5090, public_address="203.0.113.7"),
}


@needs_kamailio
@pytest.mark.parametrize("name", COMBINATIONS)
def test_kamailio_accepts_the_rendered_config(tmp_path, name):
    listed = tmp_path / "dispatcher.list"
    listed.write_text(render_dispatcher_list(WORKERS))
    cfg = tmp_path / "kamailio.cfg"
    cfg.write_text(render_front_config(COMBINATIONS[name], WORKERS, dispatcher_list=listed))
    proc = subprocess.run([KAMAILIO, "-c", "-f", str(cfg)], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]


# --------------------------------------------------------------------------- start-up errors and log lines


async def test_a_missing_kamailio_is_one_line_naming_the_package(tmp_path):
    with pytest.raises(SipError, match="apt-get install kamailio") as e:
        async with open_front(base(), WORKERS, tmp_path, options=FrontOptions(program="kamailio-not-installed")):
            pass
    assert "\n" not in str(e.value)


@needs_kamailio
async def test_a_config_kamailio_rejects_is_one_line_with_kamailio_s_own_error(tmp_path, monkeypatch):
    def broken(*args, **kwargs) -> str:
        return "#!KAMAILIO\nloadmodule \"sl.so\"\nrequest_route {\n\tno_such_function();\n}\n"

    monkeypatch.setattr(front_module, "render_front_config", broken)
    settings = base(port=_free_port())
    with pytest.raises(SipError) as e:
        async with open_front(settings, WORKERS, tmp_path):
            pass
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("kamailio (the SIP front) did not start: ")
    assert "no_such_function" in message or "parse error" in message, message


def test_block_lines_are_one_warning_each_and_counted(caplog):
    front = Front("127.0.0.1", 5060, Path("kamailio.cfg"), 1)
    caplog.set_level(logging.DEBUG, logger="voicebot.sip.front")
    front_module._log_line(" 3(4711) WARNING: <script>: voicebot-front: blocked scanner from udp:192.0.2.1:5060:"
                           " User-Agent 'friendly-scanner'", front)
    front_module._log_line(" 3(4711) WARNING: <script>: voicebot-front: blocked scanner from udp:192.0.2.1:"
                           " 41 more in the 60 s after that", front)
    front_module._log_line(" 1(4709) ERROR: <core> [core/parser/parse_via.c:2051]: parse_via(): bad char", front)
    front_module._log_line(" 1(4709) ERROR: <core> [core/tcp_main.c:1]: tcp_send(): connection refused", front)
    assert front.blocks == {"scanner": 42}
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [
        (logging.WARNING, "blocked scanner from udp:192.0.2.1:5060: User-Agent 'friendly-scanner'"),
        (logging.WARNING, "blocked scanner from udp:192.0.2.1: 41 more in the 60 s after that"),
        (logging.DEBUG, "kamailio: parse_via(): bad char"),
        (logging.ERROR, "kamailio: tcp_send(): connection refused"),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
