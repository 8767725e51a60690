"""Building what every call shares, once per process, from the settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import AsyncIterator, Callable

from voicebot.asr.grammar import GrammarSet
from voicebot.asr.select import open_engine
from voicebot.calls.listener import ListenerConfig
from voicebot.calls.queue import QueueBackend, StoreQueue
from voicebot.calls.session import CallRecorder, SessionServices
from voicebot.config import Settings
from voicebot.dialogue.policy import Policy
from voicebot.dialogue.scenario import Scenario, load_scenario
from voicebot.storage.base import CallStore
from voicebot.audio.vad import EndpointerConfig
from voicebot.tts.cache import PromptCache
from voicebot.tts.espeak import EspeakSynthesizer

log = logging.getLogger("voicebot")


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    scenario: Scenario
    services: SessionServices


def service_queue(settings: Settings, store: CallStore) -> StoreQueue | None:
    """Where the phone service's transferred callers wait: the store's queue, unless ``[queue] enabled`` is off
    (then a transfer goes at once to the fixed ``[sip.transfer] target_uri``)."""
    return StoreQueue(store) if settings.queue.enabled else None


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings, recorder: CallRecorder, *, workers: int = 4,
                       today: date | None = None, queue: QueueBackend | None = None) -> AsyncIterator[Runtime]:
    """Load scenario, grammars, recognizer and synthesizer; close them on exit.

    With ``queue``, transferred calls wait there for a person (see voicebot.calls.queue).
    """
    loop = asyncio.get_running_loop()
    scenario = load_scenario(settings.scenario)
    grammars = GrammarSet.load(settings.asr.grammars_dir)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voicebot-engine") as executor:
        def run_blocking(fn: Callable, *args: object) -> asyncio.Future:
            return loop.run_in_executor(executor, fn, *args)

        engine = await run_blocking(lambda: open_engine(
            settings.asr.engine, vosk_model=settings.asr.vosk_model, models_dir=settings.asr.models_dir,
            grammars=grammars, open_sentences=scenario.open_speech_sentences(),
            max_alternatives=settings.asr.max_alternatives, pocketsphinx_model=settings.asr.pocketsphinx_model,
            workers=(os.cpu_count() or 1) if settings.asr.workers is None else settings.asr.workers,
            ready_calls=settings.asr.ready_calls,
        ))
        synth = await run_blocking(lambda: EspeakSynthesizer(
            settings.sample_rate_hz, voice=settings.tts.voice, rate_wpm=settings.tts.rate_wpm))
        prompts = PromptCache(synth, max_items=settings.tts.cache_items)
        await run_blocking(prompts.warm, scenario.static_prompts())
        if queue is not None and scenario.hold is not None:
            await run_blocking(prompts.warm, scenario.hold.static_prompts())
        listen = settings.listen
        services = SessionServices(
            engine=engine,
            prompts=prompts,
            policy=await run_blocking(lambda: Policy(scenario, today=today)),
            recorder=recorder,
            run_blocking=run_blocking,
            listener_config=ListenerConfig(
                endpointer=EndpointerConfig(
                    aggressiveness=listen.vad_aggressiveness, end_silence_ms=listen.end_silence_ms,
                    min_speech_ms=listen.min_speech_ms,
                ),
                complete_pause_ms=listen.complete_pause_ms,
                decode_ahead=listen.decode_ahead,
                ahead_silence_ms=listen.ahead_silence_ms,
            ),
            queue=queue,
        )
        try:
            yield Runtime(settings, scenario, services)
        finally:
            close = getattr(engine, "close", None)
            if close is not None:
                await run_blocking(close)
