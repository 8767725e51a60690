"""A call recorder that keeps everything in memory: replay and tests."""

from __future__ import annotations

import itertools

from voicebot.calls.report import CallReport, Turn
from voicebot.events import IntakeForm


class MemoryRecorder:
    def __init__(self, first_reference: int = 100001) -> None:
        self._numbers = itertools.count(first_reference)
        self.ended: list[CallReport] = []

    async def call_started(self, report: CallReport) -> None:
        pass

    async def turn_added(self, report: CallReport, turn: Turn) -> None:
        pass

    async def intake_saved(self, report: CallReport, intake: IntakeForm) -> None:
        pass

    async def submit_intake(self, report: CallReport, intake: IntakeForm) -> str:
        return f"HA{next(self._numbers)}"

    async def call_ended(self, report: CallReport) -> None:
        self.ended.append(report)
