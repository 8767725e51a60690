"""The pjsua2 thread's care of PJSIP objects (PJSIP in this process: marked pjsip)."""

from __future__ import annotations

import time

import pytest

from voicebot.sip.endpoint import EndpointConfig, SipEndpoint
from voicebot.sip.media import FramePort

pytestmark = pytest.mark.pjsip


def wait_for(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_released_media_port_is_out_of_the_conference_bridge_before_its_python_side_goes():
    endpoint = SipEndpoint(EndpointConfig(port=0, max_calls=1))
    endpoint.start()
    try:
        heard: list[bytes] = []
        port = endpoint.submit(FramePort, "looped", heard.append, lambda: 0.0).result(5)

        def loop_back() -> None:
            port.startTransmit(port)
            port.receiving = True

        endpoint.submit(loop_back).result(5)
        assert wait_for(lambda: len(heard) > 3), "the clock never called the port"
        endpoint.submit(endpoint.release_later, port).result(5)
        # destroyed on the pjsua2 thread's next turn, although this test still holds the Python object
        assert wait_for(lambda: not port.thisown)
        frames = port.stats.frames_in
        time.sleep(0.2)
        assert port.stats.frames_in == frames
    finally:
        endpoint.stop()
