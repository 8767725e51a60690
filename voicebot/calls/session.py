"""One call, whatever carries it: transport -> listener -> policy -> speaker.

Replayed WAVs, SIP calls and the sound card all run through ``CallSession``.
The session is driven by the transport's 20 ms frames: every timer is checked
against the session clock when a frame arrives, so a replay on a virtual clock
takes the same decisions as a live call.

With a queue (``SessionServices.queue``) a transferred call waits in line: the
session joins the queue, asks it where the caller stands whenever the policy's
QueueTimer runs out (and as soon as the queue says the entry changed), and
feeds the answers to the policy as QueueUpdate / AgentReady on the session clock.
When the agent's phone cannot be reached the caller is still on the line: the
policy hears AgentUnreachable and puts them back in line (ReturnToQueue).
Without one, a transfer hands the call to the transport at once, as it always did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Awaitable, Callable, Protocol

from voicebot.asr.base import RecognizerEngine
from voicebot.calls.hold import HoldAudio
from voicebot.calls.listener import Listener, ListenerConfig, RunBlocking
from voicebot.calls.queue import AgentTook, QueueBackend, QueueError, Waiting
from voicebot.calls.report import CallReport, Turn
from voicebot.calls.speaker import PlayoutIdle, PromptEnded, PromptStarted, Speaker, SpeakerEvent
from voicebot.clock import Clock
from voicebot.dialogue.policy import DialogueState, Policy
from voicebot.events import (
    Action, AgentReady, AgentUnreachable, AudioFrame, CallerEvent, CallerHungUp, CallStarted, ConnectAgent, DtmfKey,
    DtmfTimeout, DtmfTone, EndCall, EnterQueue, IntakeForm, IntakeSubmitted, LeaveQueue, Listen, NoInput, PlayHold,
    QueueTimer, QueueUpdate, RecognizedIntent, RequestCallback, ReturnToQueue, SaveIntake, Say, ServiceClosing,
    SpeechStarted, SubmitIntake, Transfer, TransportClosing, TransportHangup, Utterance,
)
from voicebot.transports.base import Transport

log = logging.getLogger("voicebot.calls")

#: when the queue did not answer, ask again this much later
QUEUE_RETRY_S = 5.0


class PromptRenderer(Protocol):
    sample_rate_hz: int

    def render(self, text: str) -> bytes:
        """Blocking: synthesize (or fetch from cache) int16 PCM at ``sample_rate_hz``."""


class CallRecorder(Protocol):
    """Where a call's record goes while it happens (memory for replay, the store for live calls)."""

    async def call_started(self, report: CallReport) -> None: ...

    async def turn_added(self, report: CallReport, turn: Turn) -> None:
        """A turn was added, or the caller's last turn learnt its intent."""

    async def intake_saved(self, report: CallReport, intake: IntakeForm) -> None: ...

    async def submit_intake(self, report: CallReport, intake: IntakeForm) -> str:
        """Store a submitted form; returns its reference number."""

    async def call_ended(self, report: CallReport) -> None: ...


@dataclass(frozen=True, slots=True)
class SessionServices:
    """What every call shares: engines, the dialogue, the record keeper."""

    engine: RecognizerEngine
    prompts: PromptRenderer
    policy: Policy
    recorder: CallRecorder
    run_blocking: RunBlocking
    listener_config: ListenerConfig = ListenerConfig()
    #: where transferred callers wait for a person; None: a transfer hands the call over at once
    queue: QueueBackend | None = None
    hold_audio: HoldAudio = field(default_factory=HoldAudio)


@dataclass(slots=True)
class _InQueue:
    """This call's place in the queue while it waits."""

    entry_id: int
    joined_s: float
    #: session time at which to ask the queue again (the policy's QueueTimer)
    ask_at_s: float | None = None
    #: the queue said the entry changed: ask now
    changed: bool = False
    watcher: asyncio.Task | None = None


@dataclass(slots=True)
class _BeforeTurn:
    """How things stood before the caller's last turn was answered, to answer it again when the
    caller turns out to have gone on (``Utterance.continues``). Only while the answer was speech
    alone (``undoable``): a form saved or a call handed over is not taken back."""

    state: DialogueState
    listen: Listen
    turn: Turn
    #: latencies measured before the answer
    latencies: int
    undoable: bool = True


@dataclass(slots=True)
class _AwaitingReply:
    speech_end_s: float
    endpoint_wall_s: float
    compute_s: float | None = None


class CallSession:
    def __init__(self, services: SessionServices, transport: Transport, clock: Clock, name: str,
                 call_id: str | None = None) -> None:
        self._svc = services
        self._transport = transport
        self._clock = clock
        self.report = CallReport(call=name, call_id=call_id or uuid.uuid4().hex[:12],
                                 caller_id=transport.caller_id, engine=services.engine.name)
        self._state: DialogueState = services.policy.initial_state()
        self._speaker_events: deque[SpeakerEvent] = deque()
        self._speaker = Speaker(transport.sample_rate_hz, self._speaker_events.append)
        self._listen = Listen("menu")
        self._no_input_at: float | None = None
        self._interdigit_at: float | None = None
        self._deferred: list[Utterance] = []
        self._events: deque[CallerEvent] = deque()
        self._finishing: Action | None = None
        self._awaiting: _AwaitingReply | None = None
        self._bot_turns: dict[tuple[str, float], Turn] = {}
        self._in_queue: _InQueue | None = None
        self._before_turn: _BeforeTurn | None = None
        self.asr_busy_s = 0.0

    @property
    def speaker(self) -> Speaker:
        return self._speaker

    async def run(self) -> CallReport:
        svc = self._svc
        self.report.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        stream = await svc.run_blocking(svc.engine.open_stream)
        listener = Listener(stream, self._transport.sample_rate_hz, svc.run_blocking, svc.policy.is_complete,
                            svc.listener_config)
        self._listener = listener
        try:
            await svc.recorder.call_started(self.report)
            self._transport.attach(self._speaker)
            await self._dispatch(CallStarted(self._clock.now_s(), self._transport.caller_id))
            await self._loop(listener)
        finally:
            await self._leave_queue_if_waiting()
            self.asr_busy_s = listener.asr_busy_s
            self._speaker.stop(self._clock.now_s())
            await self._drain_speaker_events()
            await svc.run_blocking(stream.close)
            self.report.duration_s = self._clock.now_s()
            self.report.ended_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
            await svc.recorder.call_ended(self.report)
        return self.report

    async def _loop(self, listener: Listener) -> None:
        async for item in self._transport.receive():
            await self._drain_speaker_events()
            if self._finishing is not None:
                hung_up = isinstance(item, TransportHangup)
                if (hung_up or not self._speaker.busy) and await self._finish(hung_up=hung_up):
                    return
                continue
            await self._fire_timers(self._clock.now_s())
            if isinstance(item, AudioFrame):
                for ev in await listener.on_frame(item):
                    await self._on_caller_event(ev)
            elif isinstance(item, DtmfTone):
                await self._on_caller_event(DtmfKey(item.digit, item.start_s))
            elif isinstance(item, TransportClosing):
                await self._dispatch(ServiceClosing(item.at_s))
            elif isinstance(item, TransportHangup):
                for ev in await listener.flush(item.at_s):
                    await self._on_caller_event(ev)
                await self._answer_deferred()
                await self._dispatch(CallerHungUp(item.at_s))
                if self._finishing is None:
                    self.report.outcome = "abandoned"
                return
            if self._finishing is not None and not self._speaker.busy and await self._finish():
                return

    async def _finish(self, *, hung_up: bool = False) -> bool:
        """Do what ends the bot's part of the call; False when the caller is still with the bot after all
        (the agent's phone could not be reached)."""
        action = self._finishing
        if isinstance(action, Transfer):
            await self._transport.transfer(action)
        elif isinstance(action, ConnectAgent):
            return hung_up or await self._connect_agent(action)
        else:
            await self._transport.hangup()
        return True

    # ------------------------------------------------------------------ caller side

    async def _on_caller_event(self, ev: CallerEvent) -> None:
        if self._finishing is not None:
            return
        if isinstance(ev, SpeechStarted):
            self._no_input_at = None
            self._speaker.barge_in(ev.at_s)
            await self._drain_speaker_events()
        elif isinstance(ev, Utterance):
            # Heard first, answered first: the end of a protected prompt (PlayoutIdle) may not be drained
            # yet when the floor is already free, and the words said during it come before these.
            self._deferred.append(ev)
            if not self._speaker.holding_floor:
                await self._answer_deferred()
        elif isinstance(ev, DtmfKey):
            self._no_input_at = None
            self._speaker.barge_in(ev.at_s)
            await self._drain_speaker_events()
            self._add_dtmf_turn(ev)
            if self._listen.interdigit_s is not None and ev.digit != "#":
                self._interdigit_at = ev.at_s + self._listen.interdigit_s
            else:
                self._interdigit_at = None
            self._awaiting = _AwaitingReply(ev.at_s, time.perf_counter())
            await self._dispatch(ev)

    async def _caller_turn(self, utt: Utterance) -> None:
        before = self._before_turn
        if utt.continues and before is not None and before.undoable:
            # The caller went on after a turn answered at a pause: that answer (cut short by the barge-in
            # already) is taken back, and the whole turn is answered as if it had never been cut.
            self._state, self._listen = before.state, before.listen
            self._listener.expect(before.listen)
            del self.report.latency_ms[before.latencies:]
            turn = before.turn
            turn.text, turn.end_s, turn.confidence, turn.intent = utt.text, utt.end_s, utt.confidence, None
            await self._svc.recorder.turn_added(self.report, turn)
        else:
            turn = Turn("caller", utt.text, utt.start_s, utt.end_s, confidence=utt.confidence)
            await self._add_turn(turn)
        self._awaiting = _AwaitingReply(utt.end_s, self._listener.timing.endpoint_wall_s)
        self._before_turn = _BeforeTurn(self._state, self._listen, turn, len(self.report.latency_ms))
        await self._dispatch(utt)

    def _add_dtmf_turn(self, key: DtmfKey) -> None:
        last = self.report.turns[-1] if self.report.turns else None
        if last and last.speaker == "caller" and last.text.startswith("[DTMF ") and key.at_s - last.end_s < 5.0:
            last.text = last.text[:-1] + key.digit + "]"
            last.end_s = key.at_s
        else:
            self.report.turns.append(Turn("caller", f"[DTMF {key.digit}]", key.at_s, key.at_s, confidence=1.0))

    async def _fire_timers(self, now_s: float) -> None:
        waiting = self._in_queue
        if waiting is not None and (waiting.changed or (waiting.ask_at_s is not None and now_s >= waiting.ask_at_s)):
            on_schedule = waiting.ask_at_s is not None and now_s >= waiting.ask_at_s
            waiting.changed = False
            if on_schedule:
                waiting.ask_at_s = None
            await self._ask_queue(agent_only=not on_schedule)
            await self._run_events()
        if self._interdigit_at is not None and now_s >= self._interdigit_at:
            self._interdigit_at = None
            await self._dispatch(DtmfTimeout(now_s))
        if self._no_input_at is not None and now_s >= self._no_input_at and not self._listener.in_speech:
            self._no_input_at = None
            await self._dispatch(NoInput(now_s))

    # ------------------------------------------------------------------ policy

    async def _dispatch(self, event: CallerEvent) -> None:
        if not isinstance(event, Utterance):
            self._before_turn = None
        self._events.append(event)
        await self._run_events()

    async def _run_events(self) -> None:
        while self._events:
            event = self._events.popleft()
            self._state, actions = self._svc.policy.step(self._state, event)
            for action in actions:
                await self._act(action)

    async def _act(self, action: Action) -> None:
        svc = self._svc
        if self._before_turn is not None and not isinstance(action, (Say, Listen, RecognizedIntent)):
            self._before_turn.undoable = False
        match action:
            case Say():
                pcm = await svc.run_blocking(svc.prompts.render, action.text)
                if self._awaiting is not None and self._awaiting.compute_s is None:
                    self._awaiting.compute_s = time.perf_counter() - self._awaiting.endpoint_wall_s
                self._speaker.queue(action, pcm)
            case Listen():
                self._listen = action
                self._listener.expect(action)
                self._interdigit_at = None
                self._no_input_at = None if self._speaker.busy else self._clock.now_s() + action.no_input_s
            case RecognizedIntent():
                last = next((t for t in reversed(self.report.turns) if t.speaker == "caller"), None)
                if last is not None:
                    last.intent, last.confidence, last.counted = action.intent, action.confidence, action.counted
                    # saved now: an agent taking the call from the queue reads why the caller called
                    await svc.recorder.turn_added(self.report, last)
            case SaveIntake():
                self.report.intake = action.intake
                await svc.recorder.intake_saved(self.report, action.intake)
            case SubmitIntake():
                reference = await svc.recorder.submit_intake(self.report, action.intake)
                self.report.intake = replace(action.intake, reference=reference)
                self._events.append(IntakeSubmitted(reference, self._clock.now_s()))
            case Transfer():
                self.report.transfer = action
                self.report.outcome = "transferred"
                self._finishing = action
            case EnterQueue():
                if svc.queue is not None and isinstance(self._finishing, Transfer):
                    await self._join_queue(svc.queue, action)
            case QueueTimer():
                if self._in_queue is not None:
                    self._in_queue.ask_at_s = self._clock.now_s() + action.after_s
            case PlayHold():
                self._speaker.hold(await svc.run_blocking(svc.hold_audio.render, self._transport.sample_rate_hz))
            case LeaveQueue():
                await self._end_wait(lambda queue, entry_id: queue.leave(entry_id),
                                     f"left the queue after {action.waited_s:.1f} s")
            case RequestCallback():
                number = action.number
                await self._end_wait(lambda queue, entry_id: queue.callback(entry_id, number),
                                     "asked to be called back")
            case ConnectAgent():
                self._finishing = action
            case ReturnToQueue():
                await self._back_in_line(action)
            case EndCall():
                self.report.outcome = action.outcome
                self._finishing = action

    # ------------------------------------------------------------------ the queue

    async def _join_queue(self, queue: QueueBackend, action: EnterQueue) -> None:
        """In line instead of handed over; if the queue does not answer, the hand-off goes ahead as before."""
        try:
            entry_id = await queue.join(self.report, action.queue, priority=action.priority, reason=action.reason)
        except QueueError as e:
            log.warning("call %s: cannot join queue %s (%s): transferring at once", self.report.call_id,
                        action.queue, e)
            return
        self._finishing = None
        self._in_queue = waiting = _InQueue(entry_id, self._clock.now_s())
        waiting.watcher = asyncio.create_task(self._watch_queue(queue, waiting),
                                              name=f"voicebot-queue-watch {self.report.call_id}")
        await self._ask_queue(agent_only=False)

    async def _watch_queue(self, queue: QueueBackend, waiting: _InQueue) -> None:
        """Marks the entry changed whenever the queue says so; the session asks on its next frame."""
        try:
            async for _ in queue.watch(waiting.entry_id):
                waiting.changed = True
        except QueueError as e:
            log.warning("call %s: queue changes unavailable (%s): asking on the announcement schedule only",
                        self.report.call_id, e)

    async def _ask_queue(self, *, agent_only: bool) -> None:
        """Where the caller stands, as the policy's next event; with ``agent_only`` only an agent taking it."""
        waiting, queue = self._in_queue, self._svc.queue
        assert waiting is not None and queue is not None
        now_s = self._clock.now_s()
        try:
            status = await queue.status(waiting.entry_id)
        except QueueError as e:
            log.warning("call %s: queue did not answer (%s)", self.report.call_id, e)
            if not agent_only:
                waiting.ask_at_s = now_s + QUEUE_RETRY_S
            return
        if isinstance(status, AgentTook):
            self._events.append(AgentReady(status.agent, status.sip_uri, now_s))
        elif isinstance(status, Waiting) and not agent_only:
            self._events.append(QueueUpdate(status.position, status.estimated_wait_s, now_s - waiting.joined_s,
                                            now_s))
        elif not isinstance(status, Waiting):
            log.warning("call %s: queue entry %d is %s while the caller waits", self.report.call_id,
                        waiting.entry_id, status.state)

    async def _connect_agent(self, action: ConnectAgent) -> bool:
        """Hand the caller to the agent's phone; when that fails the caller is still here, and the policy
        hears it (AgentUnreachable). Whether the caller reached the agent."""
        transfer = self.report.transfer or Transfer("caller_request", "")
        if await self._transport.transfer(transfer, target_uri=action.sip_uri):
            await self._end_wait(lambda queue, entry_id: queue.connected(entry_id),
                                 f"connected to agent {action.agent} at {action.sip_uri}")
            return True
        log.info("call %s: agent %s at %s could not be reached", self.report.call_id, action.agent, action.sip_uri)
        self._finishing = None
        await self._dispatch(AgentUnreachable(action.agent, action.sip_uri, self._clock.now_s()))
        return False

    async def _back_in_line(self, action: ReturnToQueue) -> None:
        """The caller's entry goes back to waiting at its old place; the agent who was not reached is set away."""
        waiting, queue = self._in_queue, self._svc.queue
        if waiting is None or queue is None:
            return
        try:
            await queue.back_in_line(waiting.entry_id)
        except QueueError as e:
            log.error("call %s: back in line after agent %s was not reached, but the queue did not record it (%s)",
                      self.report.call_id, action.agent, e)
        else:
            log.info("call %s: back in line after agent %s was not reached", self.report.call_id, action.agent)

    async def _leave_queue_if_waiting(self) -> None:
        """However the call ends, it does not stay in line (a caller the bot no longer has)."""
        await self._end_wait(lambda queue, entry_id: queue.leave(entry_id), "left the queue as the call ended")

    async def _end_wait(self, tell: Callable[[QueueBackend, int], Awaitable[None]], what: str) -> None:
        """Out of line: stop watching the entry, then ``tell`` the queue how the wait ended."""
        waiting = await self._stop_waiting()
        queue = self._svc.queue
        if waiting is None or queue is None:
            return
        try:
            await tell(queue, waiting.entry_id)
        except QueueError as e:
            log.error("call %s: %s, but the queue did not record it (%s)", self.report.call_id, what, e)
        else:
            log.info("call %s: %s", self.report.call_id, what)

    async def _stop_waiting(self) -> _InQueue | None:
        waiting, self._in_queue = self._in_queue, None
        if waiting is not None and waiting.watcher is not None:
            waiting.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting.watcher
        return waiting

    # ------------------------------------------------------------------ bot side

    async def _drain_speaker_events(self) -> None:
        while self._speaker_events:
            ev = self._speaker_events.popleft()
            if isinstance(ev, PromptStarted):
                turn = Turn("bot", ev.text, ev.at_s, ev.at_s)
                self._bot_turns[(ev.text, ev.at_s)] = turn
                await self._add_turn(turn)
                self._measure_latency(ev.at_s)
            elif isinstance(ev, PromptEnded):
                turn = self._bot_turns.pop((ev.text, ev.start_s), None)
                if turn is not None:
                    turn.end_s, turn.interrupted = ev.end_s, ev.interrupted
            elif isinstance(ev, PlayoutIdle):
                if self._finishing is None:
                    self._no_input_at = ev.at_s + self._listen.no_input_s
                    await self._answer_deferred()

    async def _answer_deferred(self) -> None:
        """Speech heard during a protected prompt is answered once the prompt is over."""
        deferred, self._deferred = self._deferred, []
        for utt in deferred:
            await self._caller_turn(utt)

    def _measure_latency(self, reply_start_s: float) -> None:
        waiting, self._awaiting = self._awaiting, None
        if waiting is None:
            return
        latency_s = reply_start_s - waiting.speech_end_s
        if self._clock.virtual:
            # Virtual time stands still while we compute; a live caller would wait for it.
            latency_s += waiting.compute_s or 0.0
        self.report.latency_ms.append(latency_s * 1000)

    async def _add_turn(self, turn: Turn) -> None:
        self.report.turns.append(turn)
        await self._svc.recorder.turn_added(self.report, turn)
