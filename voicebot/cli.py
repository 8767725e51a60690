"""The ``voicebot`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from voicebot import __version__
from voicebot.config import Settings, load_settings
from voicebot.errors import VoicebotError

log = logging.getLogger("voicebot")

#: exit codes
OK, FAILED, BAD_INPUT = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr,
    )
    if not hasattr(args, "run"):
        parser.print_help()
        return BAD_INPUT
    try:
        return args.run(args)
    except VoicebotError as e:
        print(f"voicebot: {e}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="voicebot", description="Offline voice-bot telephony service.")
    p.add_argument("--version", action="version", version=f"voicebot {__version__}")
    p.add_argument("-c", "--config", type=Path, help="TOML settings file (default: $VOICEBOT_CONFIG)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    sub = p.add_subparsers(title="commands")

    r = sub.add_parser("replay", help="replay recorded calls (WAV, caller side) through the bot")
    r.add_argument("files", nargs="+", metavar="FILE")
    r.add_argument("--json", action="store_true", help="one JSON report per call per line on stdout")
    r.add_argument("--out", type=Path, metavar="DIR", help="write a stereo WAV (caller left, bot right) and JSON per call")
    r.add_argument("--expect", type=Path, metavar="SPEC.json", help="check each call against its expect block")
    r.add_argument("--realtime", action="store_true", help="pace the replay at real time")
    r.add_argument("--channel", type=int, default=0, help="caller channel of stereo files (default 0)")
    r.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, help="calls replayed at once")
    r.add_argument("--server", metavar="URL", help="report the calls to the service at URL (e.g. "
                   "http://127.0.0.1:8080) and put transferred ones in its queue; paced at real time")
    r.add_argument("--token", default=os.environ.get("VOICEBOT_API_TOKEN", ""), help="a supervisor's API token "
                   "for --server (default $VOICEBOT_API_TOKEN)")
    r.add_argument("--caller-id", default="replay", metavar="NUMBER", help="the calls' caller ID (a callback "
                   "offers to call it back)")
    r.add_argument("--stay", type=float, default=0.0, metavar="S", help="stay on the line S seconds of silence "
                   "after each recording (e.g. waiting in a --server queue for an agent)")
    _engine_options(r)
    r.set_defaults(run=_cmd_replay)

    sv = sub.add_parser("serve", help="the phone service: answer SIP calls, HTTP API for health, metrics and calls")
    sv.add_argument("--sip-host", help="address the SIP front listens on (default 0.0.0.0)")
    sv.add_argument("--sip-port", type=int, help="SIP port, UDP and TCP (default 5060)")
    sv.add_argument("--http-host", help="address of the HTTP API (default 127.0.0.1)")
    sv.add_argument("--http-port", type=int, help="HTTP port (default 8080)")
    sv.add_argument("--max-calls", type=int, help="calls answered at once (default 20)")
    sv.add_argument("--workers", type=int, help="call-answering processes (default: as max-calls needs; 0: in"
                                                " this process without the SIP front, development only)")
    sv.add_argument("--record", action="store_true", default=None, help="keep a stereo WAV of every call")
    _engine_options(sv)
    sv.set_defaults(run=_cmd_serve)

    m = sub.add_parser("models", help="speech recognition models")
    msub = m.add_subparsers(title="models commands")
    md = msub.add_parser("download", help="download a Vosk model into models/")
    md.add_argument("name", help="e.g. vosk-model-small-en-us-0.15")
    md.add_argument("--force", action="store_true", help="replace an existing model")
    md.add_argument("--catalog-url", default=None, help=argparse.SUPPRESS)
    md.set_defaults(run=_cmd_models_download)
    ml = msub.add_parser("list", help="list installed models")
    ml.set_defaults(run=_cmd_models_list)
    ma = msub.add_parser("adapt", help="adapt PocketSphinx's model to synthetic test voices (needs sphinxtrain)")
    ma.add_argument("--out", type=Path, help="model directory (default models/pocketsphinx-en-us-adapted)")
    ma.add_argument("--seed", type=int, default=11, help="which voices, rates and lines say which utterance")
    ma.set_defaults(run=_cmd_models_adapt)

    s = sub.add_parser("synth", help="synthesize test calls from a call spec (needs espeak-ng)")
    s.add_argument("spec", type=Path)
    s.add_argument("outdir", type=Path)
    s.set_defaults(run=_cmd_synth)

    c = sub.add_parser("call", help="call a SIP URI and speak a WAV as the caller (a test call over real RTP)")
    c.add_argument("uri", metavar="SIP_URI", help="e.g. sip:voicebot@127.0.0.1:5060")
    c.add_argument("--play", type=Path, required=True, metavar="CALL.wav", help="the caller's voice")
    c.add_argument("--record", type=Path, metavar="OUT.wav", help="record what the far end says (16 kHz WAV)")
    c.add_argument("--dtmf", default="", metavar="KEYS@S,...", help='keys to press, seconds after answer: "0@3.5,1@9"')
    c.add_argument("--dtmf-method", choices=["rfc4733", "info"], default="rfc4733", help="how keys are sent")
    c.add_argument("--answer-timeout", type=float, default=30.0, metavar="S", help="give up unanswered after S")
    c.set_defaults(run=_cmd_call)

    t = sub.add_parser("talk", help="talk to the bot with this machine's microphone and speaker")
    t.add_argument("--list-devices", action="store_true", help="list audio inputs and outputs, then exit")
    t.add_argument("--input", metavar="DEV", help="microphone: index or (part of a) name (default: the system's)")
    t.add_argument("--output", metavar="DEV", help="speaker: index or (part of a) name (default: the system's)")
    t.add_argument("--record", type=Path, metavar="OUT.wav", help="save the call: caller left, bot right")
    _engine_options(t)
    t.set_defaults(run=_cmd_talk)

    u = sub.add_parser("users", help="web logins: supervisors, agents and their API tokens")
    usub = u.add_subparsers(title="users commands")
    ua = usub.add_parser("add", help="create a login (the password is asked for)")
    ua.add_argument("name")
    ua.add_argument("--role", choices=["supervisor", "agent"], required=True)
    ua.add_argument("--queues", default="general", help="an agent's queues, comma-separated (default general)")
    ua.add_argument("--sip-uri", default="", help="where an agent's calls ring, e.g. sip:anna@pbx.example.org")
    ua.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    ua.set_defaults(users="add")
    usub.add_parser("list", help="logins, roles, agents' queues").set_defaults(users="list")
    ud = usub.add_parser("disable", help="end a login's sessions and tokens")
    ud.add_argument("name")
    ud.set_defaults(users="disable")
    up = usub.add_parser("passwd", help="set a new password")
    up.add_argument("name")
    up.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    up.set_defaults(users="passwd")
    ut = usub.add_parser("token", help="make an API token for /api/* (printed once)")
    ut.add_argument("name")
    ut.add_argument("--label", default="", help="what the token is for, e.g. prometheus")
    ut.set_defaults(users="token")
    uts = usub.add_parser("tokens", help="a login's API tokens: id, created, label")
    uts.add_argument("name")
    uts.set_defaults(users="tokens")
    ur = usub.add_parser("revoke", help="revoke an API token by the id `users tokens` shows")
    ur.add_argument("name")
    ur.add_argument("token_id", metavar="ID")
    ur.set_defaults(users="revoke")
    for users_parser in usub.choices.values():
        users_parser.set_defaults(run=_cmd_users)
    return p


def _engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=["auto", "vosk", "pocketsphinx"], help="speech recognizer (default auto)")
    p.add_argument("--vosk-model", type=Path, help="Vosk model directory")
    p.add_argument("--scenario", type=Path, help="scenario file (default scenarios/benefits.toml)")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, overrides={
        ("asr", "engine"): getattr(args, "engine", None),
        ("asr", "vosk_model"): getattr(args, "vosk_model", None),
        ("scenario",): getattr(args, "scenario", None),
    })


# --------------------------------------------------------------------------- replay

def _cmd_replay(args: argparse.Namespace) -> int:
    from voicebot.expect import load_expectations

    settings = _settings(args)
    expectations = load_expectations(args.expect) if args.expect else None
    return asyncio.run(_replay(args, settings, expectations))


async def _replay(args: argparse.Namespace, settings: Settings, expectations: dict[str, dict] | None) -> int:
    from tqdm import tqdm

    from voicebot.expect import check_report
    from voicebot.replay import format_transcript, open_replay_runtime, replay_files

    async with open_replay_runtime(settings, workers=max(2, args.jobs), server=args.server,
                                   token=args.token) as runtime:
        with tqdm(total=len(args.files), desc="replay", unit="call", file=sys.stderr,
                  disable=len(args.files) < 2 or None, leave=False) as bar:
            results = await replay_files(runtime, args.files, jobs=args.jobs, on_done=lambda _: bar.update(),
                                         channel=args.channel, realtime=args.realtime or args.server is not None,
                                         out_dir=args.out, caller_id=args.caller_id, stay_s=args.stay)
    passed = failed = bad = 0
    for res in results:
        if res.error:
            print(f"voicebot: {res.error}", file=sys.stderr)
            bad += 1
        if res.report is None:
            continue
        if args.json:
            print(json.dumps(res.report, ensure_ascii=False), flush=True)
        else:
            print(format_transcript(res.report) + "\n", flush=True)
        if expectations is not None:
            cid = Path(res.call).stem
            if cid not in expectations:
                problems = [f"no expectation for call id {cid!r} in {args.expect}"]
            else:
                problems = check_report(res.report, expectations[cid])
            if problems:
                failed += 1
                for line in problems:
                    print(f"FAIL {res.call}: {line}", file=sys.stderr if args.json else sys.stdout)
            else:
                passed += 1
    if expectations is not None:
        print(f"{passed} passed, {failed} failed", file=sys.stderr if args.json else sys.stdout)
    if bad:
        return BAD_INPUT
    return FAILED if failed else OK


# --------------------------------------------------------------------------- serve

def _cmd_serve(args: argparse.Namespace) -> int:
    from voicebot.serve import run_service

    settings = load_settings(args.config, overrides={
        ("asr", "engine"): args.engine, ("asr", "vosk_model"): args.vosk_model, ("scenario",): args.scenario,
        ("sip", "host"): args.sip_host, ("sip", "port"): args.sip_port, ("sip", "max_calls"): args.max_calls,
        ("sip", "workers"): args.workers, ("http", "host"): args.http_host, ("http", "port"): args.http_port,
        ("recording", "enabled"): args.record,
    })
    if args.verbose == 0:  # a service logs its calls
        logging.getLogger().setLevel(logging.INFO)
    asyncio.run(run_service(settings))
    return OK


# --------------------------------------------------------------------------- users (web logins)

def _cmd_users(args: argparse.Namespace) -> int:
    from voicebot.storage import open_store
    from voicebot.web.accounts import users_command

    settings = load_settings(args.config)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    users_command(args, open_store(settings, recover=False))  # recover=False: a running service owns its calls
    return OK


# --------------------------------------------------------------------------- models, synth

def _cmd_models_download(args: argparse.Namespace) -> int:
    from voicebot.models import download_model

    settings = _settings(args)
    kwargs = {"catalog_url": args.catalog_url} if args.catalog_url else {}
    path = download_model(args.name, settings.asr.models_dir, force=args.force, **kwargs)
    print(f"installed {args.name} in {path}")
    return OK


def _cmd_models_list(args: argparse.Namespace) -> int:
    from voicebot.models import list_local_models

    settings = _settings(args)
    models = list_local_models(settings.asr.models_dir)
    if not models:
        print(f"no models in {settings.asr.models_dir} (PocketSphinx's bundled US-English model is used)")
    for m in models:
        print(f"{m.name}  {m.path}  ({'per-state grammars' if m.supports_grammar else 'open decoding only'})")
    return OK


def _cmd_models_adapt(args: argparse.Namespace) -> int:
    from voicebot.asr.adapt import adapt_model, synthetic_corpus
    from voicebot.asr.pocketsphinx import stock_model_dir
    from voicebot.asr.select import ADAPTED_POCKETSPHINX
    from voicebot.dialogue.scenario import load_scenario

    settings = _settings(args)
    scenario = load_scenario(settings.scenario)
    corpus = synthetic_corpus(scenario.open_speech_sentences() + scenario.static_prompts(), seed=args.seed)
    stock = stock_model_dir()
    out = args.out or settings.asr.models_dir / ADAPTED_POCKETSPHINX
    print(f"adapting {stock.name} with {len(corpus)} synthetic utterances (about a minute) ...", file=sys.stderr)
    adapt_model(stock / stock.name, stock / "cmudict-en-us.dict", corpus, out)
    print(f"adapted model in {out}")
    return OK


def _cmd_synth(args: argparse.Namespace) -> int:
    from voicebot.testing.callgen import build_spec

    for path in build_spec(args.spec, args.outdir):
        print(path)
    return OK


# --------------------------------------------------------------------------- call (SIP test caller)

def _cmd_call(args: argparse.Namespace) -> int:
    from voicebot.sip.client import CallPlan, call_sip, parse_dtmf

    plan = CallPlan(args.uri, args.play, record=args.record, dtmf=parse_dtmf(args.dtmf),
                    dtmf_method=args.dtmf_method, answer_timeout_s=args.answer_timeout)
    result = call_sip(plan, progress=lambda msg: print(f"call: {msg}", file=sys.stderr, flush=True))
    if not result.answered:
        print(f"voicebot: {args.uri}: not answered: {result.status_code or ''} {result.reason}".rstrip(),
              file=sys.stderr)
        return FAILED
    print(json.dumps({"uri": args.uri, "codec": result.codec, "duration_s": round(result.duration_s, 2),
                      "ended_by": result.ended_by, "dtmf": [k for k, _ in result.dtmf_sent],
                      "recorded": str(result.recorded) if result.recorded else None}))
    return OK


# --------------------------------------------------------------------------- talk (sound card)

def _cmd_talk(args: argparse.Namespace) -> int:
    from voicebot.transports.sound import choose_stream, list_devices

    if args.list_devices:
        devices = list_devices()
        if not devices:
            print("voicebot: no audio device on this machine (PortAudio sees none)", file=sys.stderr)
            return BAD_INPUT
        for direction in ("input", "output"):
            print(f"{direction}s:")
            for d in (d for d in devices if d.channels(direction) > 0):
                mark = "  (default)" if getattr(d, f"default_{direction}") else ""
                print(f"  [{d.index}] {d.name} ({d.host_api}), {d.channels(direction)} channels, "
                      f"{d.default_rate_hz} Hz{mark}")
        return OK
    settings = _settings(args)
    spec = choose_stream(args.input, args.output)  # before loading models: a missing device fails fast
    return asyncio.run(_talk(args, settings, spec))


if TYPE_CHECKING:
    from voicebot.calls.report import CallReport, Turn
    from voicebot.calls.session import CallRecorder
    from voicebot.events import IntakeForm
    from voicebot.transports.sound import StreamSpec


class _LiveTranscript:
    """A call recorder that prints each turn as the call goes.

    A caller turn is printed when the bot acts on it, so that its intent is known.
    """

    def __init__(self, inner: CallRecorder) -> None:
        self._inner = inner
        self._held: Turn | None = None

    def _flush(self) -> None:
        turn, self._held = self._held, None
        if turn is not None:
            print(f"  {turn.start_s:7.2f}  CALLER  {turn.text}   [{turn.intent or '-'} {turn.confidence:.2f}]",
                  flush=True)

    async def call_started(self, report: CallReport) -> None:
        await self._inner.call_started(report)

    async def turn_added(self, report: CallReport, turn: Turn) -> None:
        self._flush()
        if turn.speaker == "caller":
            self._held = turn
        else:
            print(f"  {turn.start_s:7.2f}  BOT     {turn.text}", flush=True)
        await self._inner.turn_added(report, turn)

    async def intake_saved(self, report: CallReport, intake: IntakeForm) -> None:
        self._flush()
        await self._inner.intake_saved(report, intake)

    async def submit_intake(self, report: CallReport, intake: IntakeForm) -> str:
        self._flush()
        return await self._inner.submit_intake(report, intake)

    async def call_ended(self, report: CallReport) -> None:
        self._flush()
        await self._inner.call_ended(report)


async def _talk(args: argparse.Namespace, settings: Settings, spec: StreamSpec) -> int:
    import signal

    from voicebot.app import open_runtime
    from voicebot.audio.wav import write_wav
    from voicebot.calls.memory import MemoryRecorder
    from voicebot.calls.session import CallSession
    from voicebot.clock import LoopClock
    from voicebot.replay import format_transcript
    from voicebot.transports.sound import open_sound_transport

    print("talk: loading the recognizer and the voice ...", file=sys.stderr, flush=True)
    async with open_runtime(settings, _LiveTranscript(MemoryRecorder())) as runtime:
        loop = asyncio.get_running_loop()
        clock = LoopClock(loop)
        async with open_sound_transport(spec, settings.sample_rate_hz, clock,
                                        record=args.record is not None) as transport:
            def hang_up() -> None:
                # Ctrl-C (or SIGTERM) is the caller hanging up; a second Ctrl-C interrupts at once.
                transport.caller_hangup()
                loop.remove_signal_handler(signal.SIGINT)

            print(f"talk: {spec.input.name} -> {spec.output.name} at {spec.rate_hz} Hz; "
                  f"speak now, Ctrl-C hangs up", file=sys.stderr, flush=True)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, hang_up)
            try:
                report = (await CallSession(runtime.services, transport, clock, name="talk").run()).to_json()
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
        if args.record is not None:
            await runtime.services.run_blocking(write_wav, args.record, transport.stereo(), settings.sample_rate_hz)
    # the outcome: the transcript's heading and summary, without the turns already printed
    lines = format_transcript(report).splitlines()
    print("\n".join([f"{lines[0]}  ended by {transport.ended_by}", *lines[1 + len(report["turns"]):]]), flush=True)
    return OK


if __name__ == "__main__":
    sys.exit(main())
