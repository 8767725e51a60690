"""One answered SIP call as a Transport for CallSession.

Caller audio arrives as 20 ms frames at the bridge's 16 kHz (whatever the
codec), RFC 4733 and SIP INFO digits as DtmfTone, BYE / media timeout as
TransportHangup. Bot audio is pulled by the media port from the attached
Speaker on PJSIP's clock; barge-in is the session's business.
"""

from __future__ import annotations

import logging
from typing import AsyncIterator, Awaitable, Callable

from voicebot.calls.speaker import Speaker
from voicebot.calls.tape import CallTape
from voicebot.events import AudioFrame, Transfer, TransportHangup, TransportItem
from voicebot.sip.endpoint import BRIDGE_RATE_HZ
from voicebot.sip.leg import LegHandle, caller_id_from
from voicebot.sip.settings import SipTransferSettings

log = logging.getLogger("voicebot.sip")

#: joins the caller's leg with a new call to the target; True once both talk
BridgeDialer = Callable[[LegHandle, str], Awaitable[bool]]


class SipTransport:
    sample_rate_hz = BRIDGE_RATE_HZ

    def __init__(self, leg: LegHandle, transfer: SipTransferSettings, bridge: BridgeDialer | None = None,
                 tape: CallTape | None = None) -> None:
        self.leg = leg
        #: both sides of the call for a recording, when recording
        self.tape = tape
        self.caller_id = caller_id_from(leg.remote_uri)
        self._transfer = transfer
        self._bridge = bridge
        #: how the call left the bot: "bot" (hung up), "refer:<uri>", "bridge:<uri>", "transfer_failed:<why>"
        self.ended_by = ""
        #: the caller is now talking to the transfer target through the service
        self.bridged = False

    def attach(self, speaker: Speaker) -> None:
        self.leg.attach(speaker, self.tape)

    async def receive(self) -> AsyncIterator[TransportItem]:
        while True:
            item = await self.leg.items.get()
            if self.tape is not None and isinstance(item, AudioFrame):
                self.tape.caller(item.pcm, item.start_s)
            yield item
            if isinstance(item, TransportHangup):
                return

    async def transfer(self, transfer: Transfer, target_uri: str | None = None) -> bool:
        """REFER or bridge (as configured) to ``target_uri`` (an agent's phone, which must be on one of the
        configured agent domains), else to the configured transfer target."""
        if target_uri and not self._transfer.admits_agent(target_uri):
            log.error("call %s: the agent's URI %s is on none of [sip.transfer] agent_domains (%s): not connecting"
                      " the caller there", self.leg.sip_call_id, target_uri,
                      ", ".join(self._transfer.agent_domains) or "none set")
            self.ended_by = "transfer_failed:agent not on an agent domain"
            await self.leg.hangup()
            return False
        target = target_uri or self._transfer.target_uri
        if not target:
            log.warning("call %s: transfer to queue %s asked, but no sip transfer target is configured: hanging up",
                        self.leg.sip_call_id, transfer.queue)
            self.ended_by = "transfer_failed:no target configured"
            await self.leg.hangup()
            return False
        if self._transfer.mode == "bridge" and self._bridge is not None:
            if await self._bridge(self.leg, target):
                self.ended_by, self.bridged = f"bridge:{target}", True
                return True
            self.ended_by = "transfer_failed:bridge"
        else:
            result = await self.leg.blind_transfer(target, self._transfer.timeout_s)
            if result.ok:
                self.ended_by = f"refer:{target}"
            else:
                self.ended_by = f"transfer_failed:{result.status_code} {result.reason}"
                log.warning("call %s: REFER to %s failed: %d %s", self.leg.sip_call_id, target,
                            result.status_code, result.reason)
        await self.leg.hangup()
        return self.ended_by.startswith("refer:")

    async def hangup(self) -> None:
        self.ended_by = self.ended_by or "bot"
        await self.leg.hangup()
