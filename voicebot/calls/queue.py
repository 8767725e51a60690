"""The caller's side of the live-agent queue: join it, ask where one stands, hear that an agent took the call.

A session given a queue (``SessionServices.queue``) puts a transferred call in
line instead of handing it over at once; the policy decides what the caller
hears, the session asks the queue on the session clock. The queue itself lives
in the store (``StoreQueue``: live calls, and replays against a local store) or
in a running service reached over HTTP (``voicebot.web.queue_api.ServiceQueue``:
``voicebot replay --server``). Both satisfy ``QueueBackend``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Protocol, TypeVar, Union

from voicebot.calls.report import CallReport
from voicebot.errors import VoicebotError
from voicebot.storage.base import CallStore, StoreError
from voicebot.storage.records import ChangesMissed, QueueChange, QueueEntry

log = logging.getLogger("voicebot.queue")
T = TypeVar("T")


class QueueError(VoicebotError):
    """The queue did not answer (store down, service unreachable); one line."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """Still in line; ``position`` 1 is next; no estimate while no agent serves the queue."""

    position: int
    estimated_wait_s: float | None


@dataclass(frozen=True, slots=True)
class AgentTook:
    """An agent took the call and is waiting for it at ``sip_uri``."""

    agent: str
    sip_uri: str


@dataclass(frozen=True, slots=True)
class Gone:
    """Out of line for some other reason (``state`` as the store has it)."""

    state: str


QueueStatus = Union[Waiting, AgentTook, Gone]


class QueueBackend(Protocol):
    """What a waiting call needs from the queue. Every method may raise QueueError."""

    async def join(self, report: CallReport, queue: str, *, priority: int, reason: str) -> int:
        """Put the call at the end of its priority's line in ``queue``; returns the entry id."""

    async def status(self, entry_id: int) -> QueueStatus: ...

    async def connected(self, entry_id: int) -> None:
        """The transfer to the agent went through."""

    async def leave(self, entry_id: int) -> None:
        """The caller left the line (hung up, gave up): abandoned."""

    async def back_in_line(self, entry_id: int) -> None:
        """The agent who took the call could not be reached: the caller waits again at their old place,
        and that agent is set away, so the next caller is not sent to the same phone."""

    async def callback(self, entry_id: int, number: str) -> None:
        """Store a callback request to ``number`` and take the entry out of line."""

    def watch(self, entry_id: int) -> AsyncIterator[None]:
        """Yields whenever the entry may have changed (so an agent taking the call is heard at once)."""


class StoreQueue:
    """The queue in the call store: what the service's calls use."""

    def __init__(self, store: CallStore) -> None:
        self._store = store

    async def join(self, report: CallReport, queue: str, *, priority: int, reason: str) -> int:
        entry = await self._call(self._store.enqueue(report.call_id, queue, priority=priority, reason=reason,
                                                     caller_id=report.caller_id))
        log.info("call %s waits in queue %s (priority %d, %s) as entry %d", report.call_id, queue, priority,
                 reason, entry.entry_id)
        return entry.entry_id

    async def status(self, entry_id: int) -> QueueStatus:
        position = await self._call(self._store.queue_position(entry_id))
        if position is not None:
            return Waiting(position.position, position.estimated_wait_s)
        entry = await self.entry(entry_id)
        if entry is None:
            return Gone("missing")
        if entry.state == "connecting" and entry.agent:
            agent = await self._call(self._store.get_agent(entry.agent))
            if agent is not None:
                return AgentTook(agent.name, agent.sip_uri)
            log.warning("queue entry %d: agent %s took it but is not known", entry_id, entry.agent)
        return Gone(entry.state)

    async def entry(self, entry_id: int) -> QueueEntry | None:
        return await self._call(self._store.get_queue_entry(entry_id))

    async def connected(self, entry_id: int) -> None:
        await self._call(self._store.mark_connected(entry_id))

    async def leave(self, entry_id: int) -> None:
        await self._call(self._store.leave_queue(entry_id, "abandoned"))

    async def back_in_line(self, entry_id: int) -> None:
        entry = await self.entry(entry_id)
        if entry is None or entry.state != "connecting":
            log.warning("queue entry %d is %s, not being connected: not put back in line", entry_id,
                        entry.state if entry else "gone")
            return
        if entry.agent and await self._call(self._store.set_agent_state(entry.agent, "away")) is not None:
            log.info("agent %s did not take call %s: set away", entry.agent, entry.call_id)
        if await self._call(self._store.requeue(entry_id)) is None:
            log.warning("queue entry %d changed meanwhile: not put back in line", entry_id)

    async def callback(self, entry_id: int, number: str) -> None:
        entry = await self.entry(entry_id)
        if entry is None:
            raise QueueError(f"queue entry {entry_id} is gone")
        await self._call(self._store.request_callback(entry.call_id, entry.queue, number))
        await self._call(self._store.leave_queue(entry_id, "callback"))

    async def watch(self, entry_id: int) -> AsyncIterator[None]:
        async with self._store.changes() as feed:
            async for change in feed:
                if isinstance(change, ChangesMissed) or (
                        isinstance(change, QueueChange) and change.entry_id == entry_id):
                    yield None

    @staticmethod
    async def _call(step: Awaitable[T]) -> T:
        try:
            return await step
        except StoreError as e:
            raise QueueError(str(e)) from e
