"""How a batch of calls is spread over the replay jobs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import voicebot.replay as replay


async def test_the_longest_calls_start_first_and_results_keep_the_order_given(tmp_path: Path, monkeypatch) -> None:
    sizes = {"short.wav": 10, "long.wav": 1000, "middle.wav": 100}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"\0" * size)
    calls = [str(tmp_path / name) for name in sizes] + [str(tmp_path / "missing.wav")]
    started: list[str] = []

    async def fake_replay_file(runtime, call: str, **kwargs) -> str:
        started.append(Path(call).name)
        await asyncio.sleep(0)
        return call

    monkeypatch.setattr(replay, "replay_file", fake_replay_file)
    results = await replay.replay_files(None, calls, jobs=1)
    assert started == ["long.wav", "middle.wav", "short.wav", "missing.wav"]
    assert results == calls
