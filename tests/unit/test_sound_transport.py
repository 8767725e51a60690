"""The sound-card transport's framing and resampling, with a fake stream in place of PortAudio.

The fake is driven from a worker thread, as PortAudio's callback thread would,
so audio really crosses into the loop through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.unit.test_resample import level_at, tone
from voicebot.calls.speaker import PlayoutIdle, PromptEnded, PromptStarted, Speaker, SpeakerEvent
from voicebot.clock import LoopClock
from voicebot.events import AudioFrame, Say, TransportHangup, TransportItem
from voicebot.transports.sound import (
    AudioCallback, SoundDevice, SoundDeviceError, SoundTransport, StreamSpec, find_device,
)

DEVICE_HZ = 48000
SESSION_HZ = 16000
AMPLITUDE = 10000


class FakeStream:
    """Stands in for a PortAudio stream; ``tick`` is one callback of the stream's thread."""

    def __init__(self) -> None:
        self.started = self.closed = self.finished = False
        self._on_audio: AudioCallback | None = None
        self._on_finished = lambda: None

    def open(self, spec: StreamSpec, on_audio: AudioCallback, on_finished) -> FakeStream:
        self._on_audio, self._on_finished = on_audio, on_finished
        return self

    def start(self) -> None:
        self.started = True

    def close(self) -> None:
        self.closed = True

    def tick(self, mic: np.ndarray) -> np.ndarray:
        assert self._on_audio is not None and not self.finished
        out, last = self._on_audio(mic.astype("<i2").tobytes(), len(mic), False)
        assert len(out) == 2 * len(mic), "a callback must fill the whole output buffer"
        if last:
            self.finished = True
            self._on_finished()
        return np.frombuffer(out, dtype="<i2")

    def fail(self) -> None:
        """The device went away: PortAudio stops the stream and says so."""
        self.finished = True
        self._on_finished()

    def run(self, mic: np.ndarray, block_sizes: tuple[int, ...]) -> np.ndarray:
        """Feed ``mic`` in buffers of varying size, as devices do; returns what the speaker played."""
        out, offset, k = [], 0, 0
        while offset < len(mic):
            n = block_sizes[k % len(block_sizes)]
            out.append(self.tick(mic[offset:offset + n]))
            offset, k = offset + n, k + 1
        return np.concatenate(out)


def device(index: int, name: str, inputs: int, outputs: int, **kw) -> SoundDevice:
    return SoundDevice(index, name, "ALSA", inputs, outputs, DEVICE_HZ, **kw)


SPEC = StreamSpec(device(0, "mic", 1, 0), device(1, "speaker", 0, 2), DEVICE_HZ)


async def started(fake: FakeStream) -> SoundTransport:
    transport = SoundTransport(SPEC, SESSION_HZ, LoopClock(), open_stream=fake.open)
    await transport.start()
    assert fake.started
    return transport


async def received(transport: SoundTransport) -> list[TransportItem]:
    return [item async for item in transport.receive()]


async def test_microphone_audio_reaches_the_session_as_20ms_frames_at_the_session_rate():
    fake = FakeStream()
    transport = await started(fake)
    mic = tone(440, DEVICE_HZ, 1.0, AMPLITUDE)
    await asyncio.to_thread(fake.run, mic, (512, 480, 1024, 333))
    transport.caller_hangup()
    items = await received(transport)
    await transport.close()

    assert isinstance(items[-1], TransportHangup) and items[-1].cause == "caller"
    frames = items[:-1]
    assert all(isinstance(f, AudioFrame) for f in frames)
    assert {(len(f.pcm), f.sample_rate_hz) for f in frames} == {(2 * SESSION_HZ // 50, SESSION_HZ)}
    assert [round(f.start_s - frames[0].start_s, 6) for f in frames] == [round(0.02 * k, 6) for k in range(len(frames))]
    # all of the second but what the resampler still holds
    assert len(frames) >= 45
    heard = np.frombuffer(b"".join(f.pcm for f in frames), dtype="<i2")
    # half a second (2 Hz bins, 440 Hz on one) past the resampler's onset
    assert level_at(heard[800:800 + SESSION_HZ // 2], SESSION_HZ, 440) == pytest.approx(AMPLITUDE, rel=0.01)
    assert fake.closed


async def test_bot_audio_is_pulled_from_the_speaker_and_played_at_the_device_rate():
    fake = FakeStream()
    transport = await started(fake)
    events: list[SpeakerEvent] = []
    speaker = Speaker(SESSION_HZ, events.append)
    speaker.queue(Say("a tone"), tone(1000, SESSION_HZ, 0.5, AMPLITUDE).tobytes())
    transport.attach(speaker)
    played = await asyncio.to_thread(fake.run, np.zeros(DEVICE_HZ, np.int16), (441, 1024, 256))
    await transport.close()

    assert len(played) == DEVICE_HZ
    loud = np.flatnonzero(np.abs(played) > AMPLITUDE // 100)
    assert (loud[-1] - loud[0]) / DEVICE_HZ == pytest.approx(0.5, abs=0.005)
    # 0.4 s (2.5 Hz bins, 1 kHz on one) inside the prompt
    middle = played[loud[0] + 2400:loud[0] + 2400 + DEVICE_HZ * 2 // 5]
    assert level_at(middle, DEVICE_HZ, 1000) == pytest.approx(AMPLITUDE, rel=0.01)
    assert [type(e) for e in events] == [PromptStarted, PromptEnded, PlayoutIdle]
    assert not speaker.busy


async def test_a_bot_hangup_plays_the_last_words_before_the_stream_stops():
    fake = FakeStream()
    transport = await started(fake)
    loop = asyncio.get_running_loop()
    idle = asyncio.Event()
    speaker = Speaker(SESSION_HZ, lambda ev: isinstance(ev, PlayoutIdle) and loop.call_soon_threadsafe(idle.set))
    prompt = tone(1000, SESSION_HZ, 0.3, AMPLITUDE)
    speaker.queue(Say("goodbye"), prompt.tobytes())
    transport.attach(speaker)
    silence = np.zeros(480, np.int16)
    played = []
    while not idle.is_set():  # the device runs until the speaker has handed out its last sample
        played.append(await asyncio.to_thread(fake.tick, silence))
    hangup = asyncio.create_task(transport.hangup())
    await asyncio.sleep(0)  # the hangup is asked for before the device's next buffer
    for _ in range(1000):
        if fake.finished:
            break
        played.append(await asyncio.to_thread(fake.tick, silence))
    await hangup
    await transport.close()

    assert fake.finished and transport.ended_by == "bot"
    out = np.concatenate(played).astype(np.float64)
    # the whole prompt came out, including what the resampler was still holding at the hangup
    assert np.sum(out ** 2) / DEVICE_HZ == pytest.approx(np.sum(prompt.astype(np.float64) ** 2) / SESSION_HZ, rel=0.02)


async def test_a_stream_that_stops_by_itself_ends_the_call():
    fake = FakeStream()
    transport = await started(fake)
    await asyncio.to_thread(fake.run, np.zeros(4800, np.int16), (480,))
    await asyncio.to_thread(fake.fail)
    items = await received(transport)
    await transport.close()

    assert isinstance(items[-1], TransportHangup) and items[-1].cause == "audio_device"
    assert transport.ended_by == "audio_device"


DEVICES = [
    device(0, "HDA Intel PCH: ALC257 Analog (hw:0,0)", 2, 2, default_input=True, default_output=True),
    device(1, "USB headset: Audio (hw:1,0)", 1, 2),
    device(2, "HDMI 0", 0, 8),
]


def test_a_device_is_found_by_index_by_name_or_by_a_unique_part_of_its_name():
    assert find_device(DEVICES, None, "input").index == 0
    assert find_device(DEVICES, "1", "input").index == 1
    assert find_device(DEVICES, "hdmi 0", "output").index == 2
    assert find_device(DEVICES, "headset", "output").index == 1


@pytest.mark.parametrize(("devices", "wanted", "direction", "says"), [
    ([], None, "input", "no audio input device on this machine"),
    (DEVICES, "7", "input", "no audio input device with index 7"),
    (DEVICES, "2", "input", "no audio input device with index 2"),
    (DEVICES, "bluetooth", "output", "no audio output device named 'bluetooth'"),
    (DEVICES, "hw:", "output", "'hw:' matches several output devices: 0 'HDA"),
    (DEVICES[1:], None, "input", "no default audio input device; pick one with --input"),
])
def test_a_device_that_is_not_there_is_one_line_saying_which(devices, wanted, direction, says):
    with pytest.raises(SoundDeviceError) as err:
        find_device(devices, wanted, direction)
    assert says in str(err.value)
    assert "\n" not in str(err.value)
