"""Rendered prompts kept in memory, so a static prompt is synthesized once per process.

The key is the text plus what shapes the audio (synthesizer type, voice, rate,
sample rate), read at render time, so one cache never serves audio in the wrong voice.
Concurrent renders of the same text wait for the first one instead of repeating it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from concurrent.futures import Future

from voicebot.tts.base import Synthesizer


class PromptCache:
    """A thread-safe LRU of synthesized prompts (int16 mono PCM at the synthesizer's rate)."""

    def __init__(self, synth: Synthesizer, max_items: int = 256) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self.synth = synth
        self.max_items = max_items
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._pending: dict[Hashable, Future[bytes]] = {}
        self._lock = threading.Lock()

    def render(self, text: str) -> bytes:
        """The prompt's PCM, synthesized on first use. Blocking: run in an executor."""
        key = self._key(text)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            pending = self._pending.get(key)
            owner = pending is None
            if owner:
                pending = self._pending[key] = Future()
                self.misses += 1
        if not owner:
            return pending.result()
        try:
            pcm = self.synth.synthesize(text)
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._pending[key]
            self._items[key] = pcm
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        pending.set_result(pcm)
        return pcm

    def warm(self, texts: Iterable[str]) -> None:
        """Render prompts ahead of the first call (e.g. every static prompt of the scenario)."""
        for text in texts:
            self.render(text)

    def __contains__(self, text: str) -> bool:
        with self._lock:
            return self._key(text) in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _key(self, text: str) -> Hashable:
        synth = self.synth
        return (
            type(synth).__qualname__,
            getattr(synth, "voice", None),
            getattr(synth, "rate_wpm", None),
            synth.sample_rate_hz,
            text,
        )
