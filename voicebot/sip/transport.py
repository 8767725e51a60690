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
from voicebot.events import AudioFrame, Transfer, TransportClosing, TransportHangup, TransportItem
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
        configured agent domains), else to the configured transfer target. True when the caller now talks to
        that person. An agent who cannot be reached leaves the caller on this call, with the bot (which puts
        them back in line); the configured target not reached ends the call, as there is nobody else to try."""
        if target_uri is None:
            return await self._to_target(transfer)
        if not self._transfer.admits_agent(target_uri):
            log.error("call %s: the agent's URI %s is on none of [sip.transfer] agent_domains (%s): not connecting"
                      " the caller there", self.leg.sip_call_id, target_uri,
                      ", ".join(self._transfer.agent_domains) or "none set")
            return False
        failure = await self._hand_over(target_uri)
        if failure is None:
            return True
        log.warning("call %s: agent at %s not reached (%s): the caller stays with the bot", self.leg.sip_call_id,
                    target_uri, failure)
        self._forget_while_away()
        return False

    async def _to_target(self, transfer: Transfer) -> bool:
        target = self._transfer.target_uri
        if not target:
            log.warning("call %s: transfer to queue %s asked, but no sip transfer target is configured: hanging up",
                        self.leg.sip_call_id, transfer.queue)
            self.ended_by = "transfer_failed:no target configured"
            await self.leg.hangup()
            return False
        failure = await self._hand_over(target)
        if failure is not None:
            self.ended_by = f"transfer_failed:{failure}"
            await self.leg.hangup()
        return failure is None

    async def _hand_over(self, target: str) -> str | None:
        """Bridge or REFER the caller to ``target``; None once done (a REFERred call is hung up, the caller's
        side has the new call), else why not."""
        if self._transfer.mode == "bridge" and self._bridge is not None:
            if not await self._bridge(self.leg, target):
                return "bridge"
            self.ended_by, self.bridged = f"bridge:{target}", True
            return None
        result = await self.leg.blind_transfer(target, self._transfer.timeout_s)
        if not result.ok:
            log.warning("call %s: REFER to %s failed: %d %s", self.leg.sip_call_id, target, result.status_code,
                        result.reason)
            return f"{result.status_code} {result.reason}"
        self.ended_by = f"refer:{target}"
        await self.leg.hangup()
        return None

    def _forget_while_away(self) -> None:
        """Caller audio and keys that came while the agent's phone was tried were meant for nobody: dropped, so
        the bot does not answer them late. A hangup (or the service closing) among them is kept."""
        kept = []
        while not self.leg.items.empty():
            item = self.leg.items.get_nowait()
            if isinstance(item, (TransportHangup, TransportClosing)):
                kept.append(item)
        for item in kept:
            self.leg.items.put_nowait(item)

    async def hangup(self) -> None:
        self.ended_by = self.ended_by or "bot"
        await self.leg.hangup()
