"""The change feed's in-process half: every reader of ``store.changes()`` gets every change once.

Backends publish what they learn (PostgreSQL through LISTEN, SQLite from its
change log) to a ``ChangeHub``; each ``ChangeFeed`` has its own bounded queue.
A feed never delivers this store's own changes made before the feed was (a
backend numbers its changes for that); another process's change committed just
before may still arrive, so a reader loads the state after subscribing and
takes changes as cues to refresh.
A reader that falls too far behind gets ``ChangesMissed`` instead of an
ever-growing backlog, and reloads.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Container

from voicebot.storage.records import ChangesMissed, StoreChange

#: changes a reader may fall behind before it is told to reload instead
FEED_BACKLOG = 1000


class ChangeFeed:
    """``async for change in store.changes()``; registered at creation, so nothing after it is missed.

    Also an async context manager (and ``aclose()``) to stop receiving.
    """

    def __init__(self, hub: "ChangeHub", skip: Container[int] = ()) -> None:
        self._hub = hub
        self._skip = skip
        self._queue: asyncio.Queue[StoreChange | None] = asyncio.Queue(FEED_BACKLOG)
        hub._feeds.add(self)

    def __aiter__(self) -> "ChangeFeed":
        return self

    async def __anext__(self) -> StoreChange:
        change = await self._queue.get()
        if change is None:
            raise StopAsyncIteration
        return change

    async def __aenter__(self) -> "ChangeFeed":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._hub._feeds.discard(self)

    def _put(self, change: StoreChange | None, seq: int | None = None) -> None:
        if seq is not None and seq in self._skip:
            return
        try:
            self._queue.put_nowait(change)
        except asyncio.QueueFull:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(ChangesMissed() if change is not None else None)


class ChangeHub:
    """Fans changes out to the feeds of one store; call ``publish`` on the event loop only."""

    def __init__(self) -> None:
        self._feeds: weakref.WeakSet[ChangeFeed] = weakref.WeakSet()

    def feed(self, skip: Container[int] = ()) -> ChangeFeed:
        """A new reader; it drops the changes numbered in ``skip`` (committed before it, delivered late)."""
        return ChangeFeed(self, skip)

    def publish(self, change: StoreChange, seq: int | None = None) -> None:
        """``seq``: the change's number, where the backend numbers them."""
        for feed in list(self._feeds):
            feed._put(change, seq)

    def close(self) -> None:
        """End every feed's iteration (the store is closing)."""
        for feed in list(self._feeds):
            feed._put(None)
        self._feeds.clear()
