"""`voicebot serve` as a test runs it: a real process group, its logs, its HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp

#: the line the service logs once it answers calls
_READY = re.compile(r"answers calls at (sip:\S+) .*HTTP API at (http://\S+)")


class ServiceProcess:
    def __init__(self, workdir: Path, config: str, *args: str) -> None:
        self.workdir = workdir
        self.config_path = workdir / "voicebot.toml"
        self.config_path.write_text(config)
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.uri = ""
        self.api_url = ""
        self.lines: list[str] = []
        self._reader: asyncio.Task | None = None

    async def start(self, timeout_s: float = 180.0) -> None:
        self.lines.clear()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicebot", "-c", str(self.config_path), "serve", *self.args,
            stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, cwd=self.workdir,
            env={**os.environ, "VOICEBOT_ENGINE": "pocketsphinx"}, start_new_session=True)
        ready = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(ready))
        done, _ = await asyncio.wait({ready, asyncio.ensure_future(self.proc.wait())}, timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        assert ready in done, "the service did not start:\n" + self.log()[-4000:]
        self.uri, self.api_url = ready.result()

    async def _read(self, ready: asyncio.Future) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            m = _READY.search(line)
            if m and not ready.done():
                ready.set_result((m.group(1), m.group(2)))

    def log(self) -> str:
        return "\n".join(self.lines)

    def signal(self, sig: signal.Signals, *, group: bool = False) -> None:
        assert self.proc is not None
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    async def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 10)
        return code

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def get(self, path: str) -> dict:
        async with aiohttp.ClientSession() as http:
            async with http.get(self.api_url + path) as resp:
                assert resp.status == 200, await resp.text()
                return await resp.json()

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as http:
            async with http.get(self.api_url + "/metrics") as resp:
                return await resp.text()
