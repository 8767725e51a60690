"""`voicebot serve` as a test runs it: a real process group, its logs, its HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

#: the line the service logs once it answers calls
_READY = re.compile(r"answers calls at (sip:\S+) .*HTTP API at (http://\S+)")
#: what a call worker logs as each call ends (voicebot/sip/service.py)
_MEDIA = re.compile(r"call (\S+) ended \(\w+\): (\d+) frames in, (\d+) out, (\d+) late, longest gap (\d+) ms"
                    r" \(caller audio (\d+) ms\)")

#: the password of every login ServiceProcess.user_token adds (a browser test signs in with it)
USER_PASSWORD = "e2e password"


@dataclass(frozen=True, slots=True)
class CallMedia:
    """One call's audio figures, as its worker logged them when the call ended."""

    sip_call_id: str
    frames_in: int
    frames_out: int
    #: bot frames sent late while a prompt played: gaps the caller hears
    late_frames: int
    longest_gap_ms: float
    #: the longest pause in caller audio: long ones mean the worker's media clock stalled
    longest_caller_gap_ms: float


def loopback_config(data_dir: Path, *, max_calls: int | None = None, queue: bool = False) -> str:
    """A config for a service that many local phones call at once: every port free, data in ``data_dir``,
    the HTTP API on loopback; the front's per-source rate limit is lifted for 127.0.0.1, which every
    phone shares. ``max_calls`` unset: the service's default (and so its default workers). Without
    ``queue`` a transfer ends the call at once (no target is configured) instead of waiting for an agent."""
    calls = "" if max_calls is None else f"max_calls = {max_calls}\n"
    return (f'data_dir = "{data_dir}"\n[http]\nport = 0\n[sip]\nhost = "127.0.0.1"\nport = 0\nrtp_port = 0\n{calls}'
            f'[sip.security]\nrate_limit_exempt = ["127.0.0.1"]\n[queue]\nenabled = {str(queue).lower()}\n')


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
        self._token = ""

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

    def call_media(self, since_line: int = 0) -> list[CallMedia]:
        """The media figures of the calls that ended, from log line ``since_line`` on."""
        found = (_MEDIA.search(line) for line in self.lines[since_line:])
        return [CallMedia(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)), float(m.group(5)),
                          float(m.group(6))) for m in found if m]

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
        headers = {"Authorization": f"Bearer {await self.api_token()}"} if path.startswith("/api/") else {}
        async with aiohttp.ClientSession() as http:
            async with http.get(self.api_url + path, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                return await resp.json()

    async def api_token(self) -> str:
        """A supervisor's API token (the API needs a login), made once with `voicebot users` on the service's store."""
        if not self._token:
            self._token = await self.user_token("e2e", "supervisor")
        return self._token

    async def user_token(self, name: str, role: str, *options: str) -> str:
        """An API token of user ``name``, added with `voicebot users add NAME --role ROLE OPTIONS` unless there."""
        users = [sys.executable, "-m", "voicebot", "-c", str(self.config_path), "users"]
        add = await asyncio.create_subprocess_exec(
            *users, "add", name, "--role", role, *options, "--password-stdin", cwd=self.workdir,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await add.communicate(f"{USER_PASSWORD}\n".encode())
        assert add.returncode == 0 or b"already exists" in err, err.decode()
        made = await asyncio.create_subprocess_exec(*users, "token", name, cwd=self.workdir,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await made.communicate()
        assert made.returncode == 0, err.decode()
        return out.decode().strip()

    async def post(self, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
        """POST to the API as the holder of ``token``: the status and the JSON answer."""
        async with aiohttp.ClientSession() as http:
            async with http.post(self.api_url + path, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
                return resp.status, await resp.json()

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as http:
            async with http.get(self.api_url + "/metrics") as resp:
                return await resp.text()


def metric_total(exposition: str, sample_name: str) -> float:
    """The sum of a metric's samples named ``sample_name`` (over all labels) in a /metrics text."""
    return sum(sample.value for family in text_string_to_metric_families(exposition)
               for sample in family.samples if sample.name == sample_name)
