"""Deleting personal data after ``[retention] days``: transcripts, intake data, caller numbers, recordings.

The store removes what it holds (``CallStore.apply_retention``) and hands back the
recording files of the calls it purged; this module deletes those files, and also
any recording in the recordings directory older than the limit (a recording the
store never heard of is still personal data). The service runs one pass at start
and then every ``interval_s``, as an aiohttp cleanup_ctx task cancelled at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

from aiohttp import web

from voicebot.storage.base import CallStore
from voicebot.storage.records import RetentionReport

log = logging.getLogger("voicebot.retention")

#: recordings the service writes (voicebot.sip.service): <recordings_dir>/<call_id>.wav
RECORDING_SUFFIX = ".wav"


@dataclass(frozen=True, slots=True)
class RetentionPass:
    """What one pass deleted."""

    report: RetentionReport
    #: recording files removed from disk
    files_deleted: int


async def retention_pass(store: CallStore, days: float, recordings_dir: Path | None = None,
                         *, wall_clock: Callable[[], float] = time.time) -> RetentionPass:
    """Purge what is older than ``days`` from the store and the recordings directory."""
    report = await store.apply_retention(days)
    cutoff_s = wall_clock() - days * 86400.0
    files = await asyncio.get_running_loop().run_in_executor(
        None, _delete_recordings, report.recording_paths, recordings_dir, cutoff_s)
    if report.calls or report.intakes or report.callbacks or files:
        log.info("retention (%g days): deleted the personal data of %d call(s), %d intake form(s), "
                 "%d closed callback(s) and %d recording file(s)",
                 days, report.calls, report.intakes, report.callbacks, files)
    else:
        log.info("retention (%g days): nothing old enough to delete", days)
    return RetentionPass(report, files)


async def run_retention(store: CallStore, days: float, interval_s: float, recordings_dir: Path | None = None,
                        *, on_pass: Callable[[RetentionPass], None] | None = None) -> None:
    """A pass now, then one every ``interval_s``, until cancelled; a failed pass is logged and retried later."""
    while True:
        try:
            done = await retention_pass(store, days, recordings_dir)
        except Exception as e:  # noqa: BLE001 - a store that is down now may answer at the next pass
            log.error("retention pass failed (retried in %g s): %s", interval_s, e)
        else:
            if on_pass is not None:
                on_pass(done)
        await asyncio.sleep(interval_s)


def retention_context(store: CallStore, days: float, interval_s: float, recordings_dir: Path | None = None
                      ) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup_ctx entry running ``run_retention`` for the app's lifetime (nothing when days is 0)."""

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        if days <= 0:
            log.info("retention off: calls, recordings and intake data are kept until deleted by hand")
            yield
            return
        task = asyncio.create_task(run_retention(store, days, interval_s, recordings_dir), name="voicebot-retention")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return lifetime


def _delete_recordings(paths: tuple[str, ...], recordings_dir: Path | None, cutoff_s: float) -> int:
    """Blocking: the store's paths, then the directory's recordings last written before ``cutoff_s``."""
    deleted = 0
    for raw in paths:
        path = Path(raw)
        if path.suffix.lower() != RECORDING_SUFFIX:  # the store only ever names recordings
            log.warning("retention: not deleting %s: not a recording", path)
            continue
        deleted += _unlink(path)
    if recordings_dir is not None and recordings_dir.is_dir():
        for path in recordings_dir.glob(f"*{RECORDING_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path.stat().st_mtime < cutoff_s:
                    deleted += _unlink(path)
    return deleted


def _unlink(path: Path) -> int:
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    except OSError as e:
        log.error("retention: cannot delete %s: %s", path, e.strerror or e)
        return 0
    return 1
