"""The local microphone and speaker as a Transport: talk to the bot on this machine.

One full-duplex PortAudio stream runs at a rate both devices support. Input
and output share it, so they advance together on the sound card's clock.
Its callback runs on PortAudio's thread and only moves audio: it copies the
microphone's samples to the event loop with ``call_soon_threadsafe`` and fills
the speaker's buffer from the attached Speaker (thread-safe, like PJSIP's
media port pulls it), resampled to the device's rate. Resampling the
microphone and cutting it into 20 ms AudioFrames at the session's rate
happens on the loop. Barge-in is the session's business, as for every call.

This is the only module that imports ``sounddevice``, and only when a device
is really wanted, so a machine without PortAudio can still run everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any, AsyncIterator, Callable, Literal, Protocol

import numpy as np

from voicebot.audio.resample import StreamResampler
from voicebot.calls.speaker import Speaker
from voicebot.clock import Clock
from voicebot.errors import VoicebotError
from voicebot.events import BYTES_PER_SAMPLE, FRAME_MS, AudioFrame, Transfer, TransportHangup, TransportItem

log = logging.getLogger("voicebot.sound")

FRAME_S = FRAME_MS / 1000
#: rates tried after the devices' own defaults, best first
FALLBACK_RATES_HZ = (48000, 44100)
#: PortAudio's "high" latency: a Python callback sharing the GIL with the recognizer needs the slack
STREAM_LATENCY = "high"
#: how long a bot hangup waits for the last words to leave the speaker before cutting the stream
DRAIN_TIMEOUT_S = 3.0
#: bot frames pulled beyond what one callback needs: covers the resampler's block delay
EXTRA_PULLS_PER_CALLBACK = 8

Direction = Literal["input", "output"]


class SoundDeviceError(VoicebotError):
    """No usable audio device (none on the machine, a name or index that does not exist, PortAudio missing)."""


@dataclass(frozen=True, slots=True)
class SoundDevice:
    index: int
    name: str
    host_api: str
    max_input_channels: int
    max_output_channels: int
    default_rate_hz: int
    default_input: bool = False
    default_output: bool = False

    def channels(self, direction: Direction) -> int:
        return self.max_input_channels if direction == "input" else self.max_output_channels


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """The stream ``voicebot talk`` opens: one microphone, one speaker, mono int16 at ``rate_hz``."""

    input: SoundDevice
    output: SoundDevice
    rate_hz: int


class AudioStream(Protocol):
    """What the transport needs of an opened stream (a sounddevice RawStream, or a test's fake)."""

    def start(self) -> None: ...

    def close(self) -> None:
        """Stop at once (pending output dropped) and release the device."""


#: runs on the stream's thread: (microphone pcm at the device rate, frame count, xrun flagged)
#: -> (exactly that many frames of speaker pcm, True when this is the last buffer to play)
AudioCallback = Callable[[bytes, int, bool], tuple[bytes, bool]]
#: opens (not starts) a stream; ``on_finished`` is called on the stream's thread once it stops by itself
StreamOpener = Callable[[StreamSpec, AudioCallback, Callable[[], None]], AudioStream]


# --------------------------------------------------------------------------- PortAudio

def _portaudio() -> ModuleType:
    """sounddevice, imported on first use (its import loads and initializes PortAudio)."""
    try:
        return importlib.import_module("sounddevice")
    except ImportError as e:
        raise SoundDeviceError(f"the sounddevice package is missing ({e}); pip install sounddevice") from None
    except OSError as e:
        raise SoundDeviceError(f"PortAudio cannot be loaded ({e}); on Debian: apt-get install libportaudio2") from None


def list_devices() -> list[SoundDevice]:
    """Every device PortAudio sees, inputs and outputs, with its index and default rate."""
    sd = _portaudio()
    apis = [api["name"] for api in sd.query_hostapis()]
    default_in, default_out = (int(i) for i in sd.default.device)
    return [
        SoundDevice(int(d["index"]), d["name"], apis[d["hostapi"]], int(d["max_input_channels"]),
                    int(d["max_output_channels"]), int(round(d["default_samplerate"])),
                    default_input=d["index"] == default_in, default_output=d["index"] == default_out)
        for d in sd.query_devices()
    ]


def find_device(devices: list[SoundDevice], wanted: str | None, direction: Direction) -> SoundDevice:
    """The device ``wanted`` names (an index, an exact name or a unique part of one), else the default."""
    usable = [d for d in devices if d.channels(direction) > 0]
    if not usable:
        raise SoundDeviceError(f"no audio {direction} device on this machine (PortAudio sees none)")
    hint = "voicebot talk --list-devices shows them"
    if wanted is None:
        default = next((d for d in usable if getattr(d, f"default_{direction}")), None)
        if default is None:
            raise SoundDeviceError(f"no default audio {direction} device; pick one with --{direction} ({hint})")
        return default
    if wanted.strip().isdigit():
        index = int(wanted)
        found = next((d for d in usable if d.index == index), None)
        if found is None:
            raise SoundDeviceError(f"no audio {direction} device with index {index} ({hint})")
        return found
    exact = [d for d in usable if d.name.lower() == wanted.lower()]
    matches = exact or [d for d in usable if wanted.lower() in d.name.lower()]
    if not matches:
        raise SoundDeviceError(f"no audio {direction} device named {wanted!r} ({hint})")
    if len(matches) > 1:
        names = ", ".join(f"{d.index} {d.name!r}" for d in matches)
        raise SoundDeviceError(f"{wanted!r} matches several {direction} devices: {names}; give the index")
    return matches[0]


def choose_stream(input_device: str | None, output_device: str | None) -> StreamSpec:
    """Resolve the devices and a rate both support: their own default first (no resampling inside
    ALSA or the driver; ours is better), then common rates."""
    sd = _portaudio()
    devices = list_devices()
    mic = find_device(devices, input_device, "input")
    speaker = find_device(devices, output_device, "output")
    rates = dict.fromkeys([mic.default_rate_hz, speaker.default_rate_hz, *FALLBACK_RATES_HZ])
    for rate_hz in rates:
        try:
            sd.check_input_settings(mic.index, channels=1, dtype="int16", samplerate=rate_hz)
            sd.check_output_settings(speaker.index, channels=1, dtype="int16", samplerate=rate_hz)
        except (sd.PortAudioError, ValueError):
            continue
        return StreamSpec(mic, speaker, rate_hz)
    raise SoundDeviceError(f"{mic.name!r} and {speaker.name!r} share no sample rate among "
                           f"{', '.join(map(str, rates))} Hz (mono, 16 bit)")


def open_portaudio_stream(spec: StreamSpec, on_audio: AudioCallback, on_finished: Callable[[], None]) -> AudioStream:
    """A full-duplex mono int16 RawStream whose callback hands the audio to ``on_audio``."""
    sd = _portaudio()

    def callback(indata: Any, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        pcm, last = on_audio(bytes(indata), frames, bool(status))
        outdata[:] = pcm
        if last:
            raise sd.CallbackStop

    try:
        return sd.RawStream(samplerate=spec.rate_hz, blocksize=0, device=(spec.input.index, spec.output.index),
                            channels=1, dtype="int16", latency=STREAM_LATENCY, callback=callback,
                            finished_callback=on_finished)
    except (sd.PortAudioError, ValueError) as e:
        raise SoundDeviceError(f"cannot open {spec.input.name!r} -> {spec.output.name!r} at {spec.rate_hz} Hz: "
                               f"{' '.join(str(e).split())}") from None


# --------------------------------------------------------------------------- the transport

@dataclass(slots=True)
class SoundStats:
    callbacks: int = 0
    #: buffers PortAudio flagged as over- or underflowed
    xruns: int = 0
    #: speaker buffers padded with silence because bot audio was not ready in time
    short_fills: int = 0


class _BotPlayout:
    """Bot audio at the device's rate. ``fill`` runs on the stream's thread only; the loop only sets flags."""

    def __init__(self, session_rate_hz: int, device_rate_hz: int, clock_s: Callable[[], float],
                 stats: SoundStats, record: bool) -> None:
        self.device_rate_hz = device_rate_hz
        self.speaker: Speaker | None = None
        #: the bot hung up: play what is pending, then report the last buffer
        self.closing = False
        #: bot audio as pulled, at the session's rate (when recording)
        self.recorded: list[bytes] | None = [] if record else None
        self._ratio = device_rate_hz / session_rate_hz
        self._pull_samples = session_rate_hz * FRAME_MS // 1000
        self._silence = bytes(self._pull_samples * BYTES_PER_SAMPLE)
        self._resampler = StreamResampler(session_rate_hz, device_rate_hz)
        self._pending = bytearray()
        self._flushed = False
        self._clock_s = clock_s
        self._stats = stats

    def fill(self, n_frames: int) -> tuple[bytes, bool]:
        need = n_frames * BYTES_PER_SAMPLE
        if self.closing and not self._flushed:
            self._flushed = True
            self._pending += self._resampler.flush()
        pulls = int(n_frames / self._ratio) // self._pull_samples + EXTRA_PULLS_PER_CALLBACK
        while not self._flushed and len(self._pending) < need and pulls > 0:
            pulls -= 1
            speaker = self.speaker
            ahead_s = len(self._pending) / BYTES_PER_SAMPLE / self.device_rate_hz
            pcm = speaker.pull(self._pull_samples, self._clock_s() + ahead_s) if speaker else self._silence
            if self.recorded is not None:
                self.recorded.append(pcm)
            self._pending += self._resampler.process(pcm)
        out = bytes(self._pending[:need])
        del self._pending[:need]
        if len(out) < need:
            if not self._flushed:
                self._stats.short_fills += 1
            out += bytes(need - len(out))
        return out, self._flushed and not self._pending


class SoundTransport:
    """One call on the local microphone and speaker; open it with ``open_sound_transport``."""

    def __init__(self, spec: StreamSpec, sample_rate_hz: int, clock: Clock, *,
                 open_stream: StreamOpener = open_portaudio_stream, caller_id: str = "local",
                 record: bool = False) -> None:
        self.spec = spec
        self.sample_rate_hz = sample_rate_hz
        self.caller_id = caller_id
        self.stats = SoundStats()
        #: how the call left the bot: "bot", "caller", "audio_device", "transfer:<queue>"
        self.ended_by = ""
        self._clock = clock
        self._open_stream = open_stream
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: AudioStream | None = None
        self._items: asyncio.Queue[TransportItem] = asyncio.Queue()
        self._finished = asyncio.Event()
        self._ended = False
        self._frame_bytes = sample_rate_hz * FRAME_MS // 1000 * BYTES_PER_SAMPLE
        self._mic = StreamResampler(spec.rate_hz, sample_rate_hz)
        self._mic_buf = bytearray()
        self._frames = 0
        self._t0_s: float | None = None
        self._caller_rec: list[bytes] | None = [] if record else None
        self._playout = _BotPlayout(sample_rate_hz, spec.rate_hz, clock.now_s, self.stats, record)

    # ------------------------------------------------------------------ lifetime (loop)

    async def start(self) -> None:
        """Open and start the stream (PortAudio may block opening a device: done in a thread)."""
        self._loop = asyncio.get_running_loop()
        stream = await asyncio.to_thread(self._open_stream, self.spec, self._on_audio, self._on_finished)
        self._stream = stream
        try:
            await asyncio.to_thread(stream.start)
        except Exception as e:
            await asyncio.to_thread(stream.close)
            self._stream = None
            raise SoundDeviceError(f"cannot start {self.spec.input.name!r} -> {self.spec.output.name!r}: "
                                   f"{' '.join(str(e).split())}") from None
        log.info("sound: %r -> %r at %d Hz (session %d Hz)", self.spec.input.name, self.spec.output.name,
                 self.spec.rate_hz, self.sample_rate_hz)

    async def close(self) -> None:
        self._ended = True
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(stream.close)
        log.info("sound: %d callbacks, %d xruns, %d short speaker buffers", self.stats.callbacks,
                 self.stats.xruns, self.stats.short_fills)

    # ------------------------------------------------------------------ Transport

    def attach(self, speaker: Speaker) -> None:
        self._playout.speaker = speaker  # one attribute store: safe while the stream's thread reads it

    async def receive(self) -> AsyncIterator[TransportItem]:
        while True:
            item = await self._items.get()
            yield item
            if isinstance(item, TransportHangup):
                return

    async def transfer(self, transfer: Transfer, target_uri: str | None = None) -> bool:
        """Nobody to hand a local caller to: say so in the outcome and end the call."""
        self.ended_by = f"transfer:{target_uri or transfer.queue}"
        await self.hangup()
        return False

    async def hangup(self) -> None:
        """The bot ends the call: let its last words play out, then stop."""
        self.ended_by = self.ended_by or "bot"
        self._ended = True
        self._playout.closing = True
        if self._stream is None:
            return
        try:
            await asyncio.wait_for(self._finished.wait(), DRAIN_TIMEOUT_S)
        except TimeoutError:
            log.warning("sound: the speaker did not finish playing within %.1f s; cutting it", DRAIN_TIMEOUT_S)

    def caller_hangup(self, cause: str = "caller") -> None:
        """The local caller hangs up (Ctrl-C): on the loop."""
        if not self._ended:
            self._ended = True
            self.ended_by = cause
            self._items.put_nowait(TransportHangup(self._clock.now_s(), cause))

    def stereo(self) -> np.ndarray:
        """Caller left, bot right, at the session's rate, both from the stream's first buffer."""
        caller = np.frombuffer(b"".join(self._caller_rec or []), dtype="<i2")
        bot = np.frombuffer(b"".join(self._playout.recorded or []), dtype="<i2")
        out = np.zeros((max(len(caller), len(bot)), 2), dtype=np.int16)
        out[:len(caller), 0] = caller
        out[:len(bot), 1] = bot
        return out

    # ------------------------------------------------------------------ the stream's thread

    def _on_audio(self, mic_pcm: bytes, n_frames: int, xrun: bool) -> tuple[bytes, bool]:
        """PortAudio's thread: post the microphone's samples to the loop, return the speaker's."""
        self.stats.callbacks += 1
        self._post(self._on_mic, mic_pcm, xrun)
        return self._playout.fill(n_frames)

    def _on_finished(self) -> None:
        self._post(self._on_stream_finished)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the call is over
            loop.call_soon_threadsafe(fn, *args)

    # ------------------------------------------------------------------ posted to the loop

    def _on_mic(self, pcm: bytes, xrun: bool) -> None:
        if xrun:
            self.stats.xruns += 1
        if self._ended:
            return
        if self._t0_s is None:
            self._t0_s = max(0.0, self._clock.now_s() - len(pcm) / BYTES_PER_SAMPLE / self.spec.rate_hz)
        self._mic_buf += self._mic.process(pcm)
        n = self._frame_bytes
        while len(self._mic_buf) >= n:
            chunk = bytes(self._mic_buf[:n])
            del self._mic_buf[:n]
            if self._caller_rec is not None:
                self._caller_rec.append(chunk)
            self._items.put_nowait(AudioFrame(chunk, self.sample_rate_hz, self._t0_s + self._frames * FRAME_S))
            self._frames += 1

    def _on_stream_finished(self) -> None:
        """The stream stopped: after the bot's last words, or by itself (a device unplugged or failing)."""
        self._finished.set()
        if not self._ended:
            log.warning("sound: the audio stream stopped by itself; ending the call")
            self.caller_hangup("audio_device")


@contextlib.asynccontextmanager
async def open_sound_transport(spec: StreamSpec, sample_rate_hz: int, clock: Clock,
                               **kwargs: Any) -> AsyncIterator[SoundTransport]:
    """A started SoundTransport, closed (device released) on exit."""
    transport = SoundTransport(spec, sample_rate_hz, clock, **kwargs)
    await transport.start()
    try:
        yield transport
    finally:
        await transport.close()
