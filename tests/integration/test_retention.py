"""Retention: the service deletes personal data past ``[retention] days`` at start and then periodically,
from the store (a real SQLite file) and the recordings directory, and stops doing so cleanly at shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from aiohttp import web

from tests.unit.test_store_queue import Clock
from voicebot.calls.report import CallReport, Turn
from voicebot.config import ConfigError, RetentionSettings, load_settings
from voicebot.events import IntakeForm
from voicebot.metrics import CallMetrics
from voicebot.retention import retention_context, retention_pass
from voicebot.storage import RetentionReport, SqliteCallStore, StoreError
from voicebot.web.api import make_app

DAY_S = 86400.0
#: a guard against a hung test, not a timing claim
GUARD_S = 30


class CountingStore(SqliteCallStore):
    """The real store, telling the test each time retention runs."""

    def __init__(self, *args, fail_first: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.passes: asyncio.Queue[float] = asyncio.Queue()
        self._fail_first = fail_first

    async def apply_retention(self, days: float) -> RetentionReport:
        self.passes.put_nowait(days)
        if self._fail_first > 0:
            self._fail_first -= 1
            raise StoreError("the database is down for a moment")
        return await super().apply_retention(days)


async def ended_call(store, call_id: str, recording: Path | None = None) -> None:
    report = CallReport(call=f"sip:{call_id}", call_id=call_id, caller_id="+358401234567",
                        started_at="2026-11-28T10:00:00+00:00")
    await store.start_call(report)
    report.turns = [Turn("caller", "my code is 131052-308T", 0.0, 2.0)]
    report.intake = IntakeForm("housing_allowance", "incomplete", {"personal_id": "131052-308T"})
    report.outcome = "completed"
    await store.end_call(report)
    if recording is not None:
        recording.write_bytes(b"RIFF")
        await store.set_recording(call_id, str(recording))


async def test_the_service_purges_at_start_then_every_interval_and_stops_with_the_app(loop_guard, aiohttp_client,
                                                                                       tmp_path):
    store = CountingStore(tmp_path / "voicebot.sqlite3")
    app = make_app(store, CallMetrics(), owns_store=True, retention=RetentionSettings(days=30, interval_s=0.01),
                   recordings_dir=tmp_path / "recordings")
    client = await aiohttp_client(app)
    for _ in range(3):  # the pass at start and two more
        assert await asyncio.wait_for(store.passes.get(), GUARD_S) == 30
    assert [t for t in asyncio.all_tasks() if t.get_name() == "voicebot-retention"]
    await client.close()  # cancels the task, then closes the store
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "voicebot-retention"]


async def test_a_failed_pass_is_logged_and_the_next_one_still_runs(loop_guard, aiohttp_client, tmp_path, caplog):
    async with CountingStore(tmp_path / "voicebot.sqlite3", fail_first=1) as store:
        app = web.Application()
        app.cleanup_ctx.append(retention_context(store, 7, 0.01))
        with caplog.at_level(logging.INFO, logger="voicebot.retention"):
            client = await aiohttp_client(app)
            for _ in range(2):
                await asyncio.wait_for(store.passes.get(), GUARD_S)
            await client.close()
    assert any("retention pass failed" in r.getMessage() and "down for a moment" in r.getMessage()
               for r in caplog.records)


async def test_with_days_0_nothing_is_ever_deleted(loop_guard, aiohttp_client, tmp_path):
    async with CountingStore(tmp_path / "voicebot.sqlite3") as store:
        await ended_call(store, "kept")
        client = await aiohttp_client(make_app(store, CallMetrics(), retention=RetentionSettings(days=0)))
        assert (await client.get("/healthz")).status == 200
        await client.close()
        assert store.passes.empty()
        assert len((await store.get_call("kept")).report.turns) == 1


async def test_a_pass_deletes_the_purged_calls_recordings_and_old_files_but_keeps_recent_ones(tmp_path, caplog):
    clock = Clock()
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    now_s = 2_000_000_000.0
    async with SqliteCallStore(tmp_path / "voicebot.sqlite3", now=clock) as store:
        await ended_call(store, "old", recordings / "old.wav")
        clock.advance(31 * DAY_S)
        await ended_call(store, "new", recordings / "new.wav")
        orphan = recordings / "orphan.wav"  # a recording the store never heard of
        orphan.write_bytes(b"RIFF")
        notes = recordings / "notes.txt"
        notes.write_text("not a recording")
        for path in (orphan, notes):
            os.utime(path, (now_s - 40 * DAY_S, now_s - 40 * DAY_S))
        for path in (recordings / "old.wav", recordings / "new.wav"):
            os.utime(path, (now_s - 1 * DAY_S, now_s - 1 * DAY_S))

        with caplog.at_level(logging.INFO, logger="voicebot.retention"):
            done = await retention_pass(store, 30, recordings, wall_clock=lambda: now_s)
        assert (done.report.calls, done.report.intakes) == (1, 1)
        assert done.report.recording_paths == (str(recordings / "old.wav"),)
        assert done.files_deleted == 2
        assert sorted(p.name for p in recordings.iterdir()) == ["new.wav", "notes.txt"]
        assert (await store.get_call("old")).report.turns == []
        assert len((await store.get_call("new")).report.turns) == 1
        assert any("1 call(s), 1 intake form(s), 0 closed callback(s) and 2 recording file(s)" in r.getMessage()
                   for r in caplog.records)


async def test_a_path_from_the_store_that_is_no_recording_is_left_alone(tmp_path):
    precious = tmp_path / "precious.db"
    precious.write_text("keep me")

    class Store:
        async def apply_retention(self, days: float) -> RetentionReport:
            return RetentionReport(1, 0, 0, (str(precious),))

    done = await retention_pass(Store(), 30)  # type: ignore[arg-type]
    assert done.files_deleted == 0 and precious.exists()


def test_retention_is_read_from_the_settings_file(tmp_path):
    config = tmp_path / "voicebot.toml"
    config.write_text("[retention]\ndays = 30\ninterval_s = 600\n")
    settings = load_settings(config, env={})
    assert settings.retention == RetentionSettings(days=30.0, interval_s=600.0)
    assert load_settings(None, env={}).retention.days == 0  # keep forever unless asked


@pytest.mark.parametrize("body, problem", [
    ("days = -1", "retention days must be 0"),
    ("interval_s = 0", "interval_s must be more than 0"),
    ("days = 'soon'", "not a valid float"),
    ("weeks = 4", "unknown setting 'weeks'"),
])
def test_a_wrong_retention_setting_is_a_one_line_config_error(tmp_path, body, problem):
    config = tmp_path / "voicebot.toml"
    config.write_text(f"[retention]\n{body}\n")
    with pytest.raises(ConfigError, match=problem):
        load_settings(config, env={})
