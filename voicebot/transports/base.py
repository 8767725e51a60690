"""What every transport (WAV replay, SIP, sound card, memory) offers a call session."""

from __future__ import annotations

from typing import AsyncIterator, Protocol

from voicebot.calls.speaker import Speaker
from voicebot.events import Transfer, TransportItem


class Transport(Protocol):
    sample_rate_hz: int
    caller_id: str

    def attach(self, speaker: Speaker) -> None:
        """From now on, pull one 20 ms frame of bot audio from ``speaker`` per tick."""

    def receive(self) -> AsyncIterator[TransportItem]:
        """Caller frames (20 ms), key presses and finally a hangup, in time order."""

    async def transfer(self, transfer: Transfer, target_uri: str | None = None) -> bool:
        """Hand the caller over to a person: ``target_uri`` (an agent who took the call from the queue),
        else the transport's own target. True when the caller now talks to that person. An agent who
        cannot be reached leaves the caller with the bot (the session puts them back in line); a failed
        hand-over to the transport's own target ends the call."""

    async def hangup(self) -> None: ...
