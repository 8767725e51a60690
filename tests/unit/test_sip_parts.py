"""The SIP side's small pure parts: settings checks, URI and caller-ID parsing, --dtmf parsing,
and reading frame bytes out of pjsua2's vectors."""

from __future__ import annotations

from dataclasses import replace

import pjsua2 as pj
import pytest

from voicebot.config import Settings
from voicebot.sip.account import registrar_host
from voicebot.sip.client import parse_dtmf
from voicebot.sip.leg import bare_uri, caller_id_from
from voicebot.sip.media import read_frame
from voicebot.sip.pool import worker_settings
from voicebot.sip.settings import SipError, SipRegistration, SipSettings, SipTransferSettings


def test_codecs_are_offered_in_the_configured_order():
    assert SipSettings().codec_ids() == ["G722/16000/1", "PCMU/8000/1", "PCMA/8000/1"]
    assert SipSettings(codecs="pcma, g722").codec_ids() == ["PCMA/8000/1", "G722/16000/1"]


@pytest.mark.parametrize("settings, message", [
    (SipSettings(codecs="G729"), "sip codecs must be"),
    (SipSettings(codecs=""), "sip codecs must be"),
    (SipSettings(port=70000), "port must be"),
    (SipSettings(udp=False, tcp=False), "at least one of udp and tcp"),
    (SipSettings(max_calls=0), "max_calls must be at least 1"),
    (SipSettings(media_timeout_s=0), "media_timeout_s must be positive"),
    (SipSettings(transfer=SipTransferSettings(mode="warm")), "transfer mode must be refer or bridge"),
    (SipSettings(transfer=SipTransferSettings(target_uri="agents@pbx")), "must be a sip: URI"),
    (SipSettings(register=SipRegistration(registrar_uri="sip:pbx")), "needs a username"),
    (SipSettings(call_slots=1, transfer=SipTransferSettings(mode="bridge", target_uri="sip:a@b")),
     "call_slots must be at least 2"),
])
def test_settings_that_cannot_work_are_one_line_errors(settings, message):
    with pytest.raises(SipError, match=message) as err:
        settings.check()
    assert "\n" not in str(err.value)


def test_capacity_is_limited_by_pjsip_call_slots_and_bridged_legs():
    assert SipSettings(max_calls=3, call_slots=4).capacity == 3
    assert SipSettings(max_calls=16, call_slots=4).capacity == 4
    bridge = SipTransferSettings(mode="bridge", target_uri="sip:agents@pbx")
    assert SipSettings(max_calls=16, call_slots=4, transfer=bridge).capacity == 2
    assert SipSettings(max_calls=16, call_slots=64, transfer=bridge).capacity == 16



@pytest.mark.parametrize("max_calls, workers, shares", [
    (10, None, [4, 3, 3]),  # rounded up each, these took 12 calls
    (20, None, [4, 4, 4, 4, 4]),
    (5, None, [3, 2]),
    (10, 2, [4, 4]),  # fewer workers than max_calls needs: their call slots are the limit
    (2, 3, [1, 1, 1]),  # more workers than calls: one each
])
def test_the_workers_shares_of_calls_add_up_to_max_calls_and_their_recognizers_are_ready_for_them(
        max_calls, workers, shares):
    settings = replace(Settings(), sip=SipSettings(max_calls=max_calls, workers=workers, call_slots=4))
    count = settings.sip.worker_count
    each = [worker_settings(settings, i, count, 0, "127.0.0.1:5060") for i in range(count)]
    assert [w.sip.capacity for w in each] == shares
    assert [w.asr.ready_calls for w in each] == shares

@pytest.mark.parametrize("remote, caller_id, uri", [
    ('"Ann Smith" <sip:+358401234567@pbx.example.org;user=phone>', "+358401234567",
     "sip:+358401234567@pbx.example.org;user=phone"),
    ("<sip:ann@127.0.0.1:5070>", "ann", "sip:ann@127.0.0.1:5070"),
    ("sip:bob@example.org", "bob", "sip:bob@example.org"),
    ("<sips:carol@example.org>", "carol", "sips:carol@example.org"),
    ("<sip:example.org>", "<sip:example.org>", "sip:example.org"),
])
def test_caller_id_is_the_user_part_of_the_from_uri(remote, caller_id, uri):
    assert caller_id_from(remote) == caller_id
    assert bare_uri(remote) == uri


@pytest.mark.parametrize("uri, host", [
    ("sip:pbx.example.org", "pbx.example.org"),
    ("sip:10.0.0.5:5060;transport=tcp", "10.0.0.5"),
    ("sips:user@pbx.example.org:5061", "pbx.example.org"),
    ("sip:[2001:db8::1]:5060", "[2001:db8::1]"),
])
def test_registrar_host(uri, host):
    assert registrar_host(uri) == host


def test_dtmf_plan_is_keys_at_seconds_in_time_order():
    assert parse_dtmf("1@9, 0@3.5") == (("0", 3.5), ("1", 9.0))
    assert parse_dtmf("#@1,*@2,a@3") == (("#", 1.0), ("*", 2.0), ("A", 3.0))
    assert parse_dtmf("") == ()


@pytest.mark.parametrize("spec", ["0", "0@", "x@1", "0@-1", "0@soon", "0@1;1@2"])
def test_a_bad_dtmf_plan_names_the_bad_part(spec):
    with pytest.raises(SipError, match="KEYS@SECONDS"):
        parse_dtmf(spec)


def test_frame_bytes_are_read_whole_from_a_pjsua2_vector():
    pcm = bytes(range(256)) * 2 + bytes(128)
    frame = pj.MediaFrame()
    frame.buf = pj.ByteVector(pcm)
    assert read_frame(frame.buf) == pcm
    assert read_frame(pj.ByteVector(b"")) == b""
    assert read_frame(pj.ByteVector(b"\x01")) == b"\x01"
