"""The call recorder for live calls: writes each call to the store as it happens.

The session changes turns after announcing them (a prompt's end time, an
intent found for a caller turn, keys added to a DTMF turn, some turns never
announced), so at every hook the recorder writes each turn that differs from
what it last wrote. The final report is written whole at the end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from voicebot.calls.report import CallReport, Turn
from voicebot.events import IntakeForm
from voicebot.metrics import CallMetrics
from voicebot.privacy import mask_fields
from voicebot.storage.base import CallStore

log = logging.getLogger("voicebot.storage")


@dataclass(slots=True)
class _Written:
    """What the store holds of a call in progress."""

    turns: list[tuple] = field(default_factory=list)
    latencies_saved: int = 0
    #: latencies already given to the metrics
    latencies_seen: int = 0


class StoreRecorder:
    def __init__(self, store: CallStore, metrics: CallMetrics | None = None) -> None:
        self._store = store
        self._metrics = metrics
        self._calls: dict[str, _Written] = {}

    @property
    def metrics(self) -> CallMetrics | None:
        """Where this recorder's calls are counted; the SIP service adds its media figures there."""
        return self._metrics

    async def call_started(self, report: CallReport) -> None:
        self._calls[report.call_id] = _Written()
        if self._metrics is not None:
            self._metrics.call_started()
        await self._store.start_call(report)
        log.info("call %s started (caller %s)", report.call_id, report.caller_id or "unknown")
        await self._save_progress(report)

    async def turn_added(self, report: CallReport, turn: Turn) -> None:
        await self._save_progress(report)

    async def intake_saved(self, report: CallReport, intake: IntakeForm) -> None:
        await self._save_progress(report)
        await self._store.save_intake(report.call_id, intake)
        log.info("call %s: %s form saved: %s", report.call_id, intake.form, mask_fields(intake.fields))

    async def submit_intake(self, report: CallReport, intake: IntakeForm) -> str:
        await self._save_progress(report)
        reference = await self._store.submit_intake(report.call_id, intake)
        log.info("call %s: %s form submitted as %s: %s", report.call_id, intake.form, reference,
                 mask_fields(intake.fields))
        return reference

    async def call_ended(self, report: CallReport) -> None:
        try:
            await self._store.end_call(report)
        finally:
            written = self._calls.pop(report.call_id, None)
            if self._metrics is not None:
                self._observe_latencies(report, written or _Written())
                self._metrics.call_ended(report.outcome, report.transfer.reason if report.transfer else None)
        log.info("call %s ended: %s%s after %.1f s", report.call_id, report.outcome,
                 f" ({report.transfer.reason})" if report.transfer else "", report.duration_s)

    async def _save_progress(self, report: CallReport) -> None:
        written = self._calls.setdefault(report.call_id, _Written())
        changed: dict[int, Turn] = {}
        snapshots = [_snapshot(t) for t in report.turns]
        for seq, snap in enumerate(snapshots):
            if seq >= len(written.turns) or written.turns[seq] != snap:
                changed[seq] = report.turns[seq]
        if self._metrics is not None:
            self._observe_latencies(report, written)
        latencies = len(report.latency_ms)
        if not changed and len(snapshots) == len(written.turns) and latencies == written.latencies_saved:
            return
        await self._store.save_progress(report.call_id, changed, report.latency_ms)
        written.turns, written.latencies_saved = snapshots, latencies

    def _observe_latencies(self, report: CallReport, written: _Written) -> None:
        assert self._metrics is not None
        for latency_ms in report.latency_ms[written.latencies_seen:]:
            self._metrics.turn_latency(latency_ms / 1000)
        written.latencies_seen = len(report.latency_ms)


def _snapshot(t: Turn) -> tuple:
    return (t.speaker, t.text, t.start_s, t.end_s, t.intent, t.confidence, t.interrupted, t.counted)
