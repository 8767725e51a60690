"""Service metrics for Prometheus, one registry per service (never the global default).

The session layer reports through a ``CallMetrics`` it is given; ``/metrics``
renders the same object. When calls run in worker processes, each worker's
metrics go to prometheus_client's multiprocess files (the workers run with
``PROMETHEUS_MULTIPROC_DIR`` set) and the service renders them all through a
``CallMetrics(multiprocess_dir=...)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from voicebot.events import Outcome, TransferReason

#: reply latency after the caller stops speaking: good is well under a second
LATENCY_BUCKETS_S = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
#: one recognizer decode (a chunk or the final result of an utterance)
ASR_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class CallMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, *, multiprocess_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._multiprocess_dir = multiprocess_dir
        r = self.registry
        self._active = Gauge("voicebot_active_calls", "Calls in progress", registry=r, multiprocess_mode="livesum")
        self._calls = Counter("voicebot_calls", "Calls ended, by outcome", ["outcome"], registry=r)
        self._transfers = Counter("voicebot_transfers", "Calls handed to a person, by reason", ["reason"], registry=r)
        self._latency = Histogram("voicebot_turn_latency_seconds", "From the end of caller speech to the bot's reply",
                                  buckets=LATENCY_BUCKETS_S, registry=r)
        self._asr = Histogram("voicebot_asr_decode_seconds", "Time spent in one recognizer decode",
                              buckets=ASR_BUCKETS_S, registry=r)
        self._underruns = Counter("voicebot_audio_underruns", "Bot audio frames sent late while a prompt played"
                                  " (gaps the caller hears)", registry=r)
        # Every known label shows up as 0 before it first happens.
        for outcome in get_args(Outcome):
            self._calls.labels(outcome)
        for reason in get_args(TransferReason):
            self._transfers.labels(reason)

    def call_started(self) -> None:
        self._active.inc()

    def call_ended(self, outcome: str, transfer_reason: str | None = None) -> None:
        self._active.dec()
        self._calls.labels(outcome).inc()
        if transfer_reason is not None:
            self._transfers.labels(transfer_reason).inc()

    def turn_latency(self, seconds: float) -> None:
        self._latency.observe(seconds)

    def asr_decode(self, seconds: float) -> None:
        self._asr.observe(seconds)

    def audio_underruns(self, frames: int) -> None:
        """A call's late bot frames, counted when it ends (so a load test can read them from /metrics)."""
        if frames > 0:
            self._underruns.inc(frames)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (of every worker process, in multiprocess mode)."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self._multiprocess_dir))
        return generate_latest(registry)

    def worker_exited(self, pid: int) -> None:
        """Drop a finished worker's live gauges (multiprocess mode)."""
        if self._multiprocess_dir is not None:
            multiprocess.mark_process_dead(pid, path=str(self._multiprocess_dir))
