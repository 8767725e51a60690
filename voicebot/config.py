"""Typed settings, built once from a TOML file, the environment and the command line."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from voicebot.errors import VoicebotError
from voicebot.sip.settings import SipSettings

#: the checkout the package runs from: grammars/, scenarios/, models/ live here
#: (an installed package finds them through VOICEBOT_HOME instead)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(VoicebotError):
    """A setting is missing or wrong (one line)."""


@dataclass(frozen=True, slots=True)
class AsrSettings:
    #: auto | vosk | pocketsphinx
    engine: str = "auto"
    #: a Vosk model directory; when unset, auto takes the first under models_dir
    vosk_model: Path | None = None
    models_dir: Path = PROJECT_ROOT / "models"
    grammars_dir: Path = PROJECT_ROOT / "grammars"
    #: alternatives asked of the recognizer per utterance
    max_alternatives: int = 5
    #: PocketSphinx acoustic model; unset: the adapted one under models_dir when built, else the stock model
    pocketsphinx_model: Path | None = None
    #: recognizer processes for PocketSphinx (it holds the GIL while decoding);
    #: None: one per CPU, 0: decode in this process (benchmarks, debugging)
    workers: int | None = None
    #: recognizers kept built, per recognizer process, for this many calls at once (a SIP call
    #: worker sets its share of sip.max_calls); ~65 MB each for PocketSphinx
    ready_calls: int = 1


@dataclass(frozen=True, slots=True)
class TtsSettings:
    voice: str | None = None
    rate_wpm: int = 175
    cache_items: int = 512


@dataclass(frozen=True, slots=True)
class ListenSettings:
    #: silence that ends a caller's turn
    end_silence_ms: int = 500
    #: webrtcvad aggressiveness 0-3
    vad_aggressiveness: int = 2
    min_speech_ms: int = 120
    #: pause after an answer that is already complete (a yes, a whole ID) before the turn ends
    complete_pause_ms: int = 100
    #: decode a turn once the recognizer has heard the part of its end silence it uses, while the
    #: rest of that silence runs: less for the caller to wait, at the price of a second decode when
    #: the caller goes on after such a pause
    decode_ahead: bool = True
    #: in the menu, decode this far into a pause: a question the scenario's ``complete_confidence``
    #: is sure of is answered then, without waiting out the rest of the silence (200 is faster; see
    #: ListenerConfig for why it is not the default)
    ahead_silence_ms: int = 300


@dataclass(frozen=True, slots=True)
class HttpSettings:
    #: loopback by default; every page and /api/* needs a login, so another address may be served
    #: (behind TLS: see README "Logins and personal data")
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    #: a stereo WAV per live call (caller left, bot right); off by default: recordings are personal data
    enabled: bool = False
    #: where recordings go; unset: <data_dir>/recordings
    directory: Path | None = None


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    #: transcripts, intake data, caller numbers and recordings of calls older than this are deleted; 0 keeps them
    days: float = 0.0
    #: how often the service looks for data past the limit (also once at start)
    interval_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.days < 0:
            raise ConfigError(f"retention days must be 0 (keep forever) or more, not {self.days:g}")
        if self.interval_s <= 0:
            raise ConfigError(f"retention interval_s must be more than 0, not {self.interval_s:g}")


@dataclass(frozen=True, slots=True)
class StoreSettings:
    #: the database: empty for the SQLite file in data_dir; sqlite:///PATH for another file;
    #: postgresql://USER:PASSWORD@HOST[:PORT]/DB when several service processes share one queue
    url: str = ""


@dataclass(frozen=True, slots=True)
class QueueSettings:
    #: a transferred caller waits in the store's queue (hold loop, position, callback offer) until an agent
    #: takes the call (docs/agents.md); off: a transfer goes at once to [sip.transfer] target_uri
    enabled: bool = True


#: the database URL forms [store] url accepts
STORE_URL_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


@dataclass(frozen=True, slots=True)
class Settings:
    scenario: Path = PROJECT_ROOT / "scenarios" / "benefits.toml"
    data_dir: Path = PROJECT_ROOT / "data"
    sample_rate_hz: int = 16000
    asr: AsrSettings = field(default_factory=AsrSettings)
    tts: TtsSettings = field(default_factory=TtsSettings)
    listen: ListenSettings = field(default_factory=ListenSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    sip: SipSettings = field(default_factory=SipSettings)
    recording: RecordingSettings = field(default_factory=RecordingSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)

    @property
    def recordings_dir(self) -> Path:
        return self.recording.directory or self.data_dir / "recordings"

    @classmethod
    def rooted(cls, home: Path) -> "Settings":
        """Defaults for a project directory other than the checkout."""
        return cls(
            scenario=home / "scenarios" / "benefits.toml", data_dir=home / "data",
            asr=AsrSettings(models_dir=home / "models", grammars_dir=home / "grammars"),
        )


_ENV = {
    "VOICEBOT_SCENARIO": ("scenario",),
    "VOICEBOT_DATA_DIR": ("data_dir",),
    "VOICEBOT_ENGINE": ("asr", "engine"),
    "VOICEBOT_VOSK_MODEL": ("asr", "vosk_model"),
    "VOICEBOT_MODELS_DIR": ("asr", "models_dir"),
    "VOICEBOT_POCKETSPHINX_MODEL": ("asr", "pocketsphinx_model"),
    "VOICEBOT_ASR_WORKERS": ("asr", "workers"),
    "VOICEBOT_TTS_VOICE": ("tts", "voice"),
    "VOICEBOT_TTS_RATE": ("tts", "rate_wpm"),
    "VOICEBOT_END_SILENCE_MS": ("listen", "end_silence_ms"),
    "VOICEBOT_HTTP_PORT": ("http", "port"),
    "VOICEBOT_SIP_PORT": ("sip", "port"),
    "VOICEBOT_SIP_PUBLIC_ADDRESS": ("sip", "public_address"),
    "VOICEBOT_RECORDING": ("recording", "enabled"),
    "VOICEBOT_DATABASE_URL": ("store", "url"),
    "VOICEBOT_QUEUE": ("queue", "enabled"),
}


def load_settings(config_file: Path | None = None, env: Mapping[str, str] | None = None,
                  overrides: Mapping[tuple[str, ...], Any] | None = None) -> Settings:
    """File, then environment, then command-line overrides (each a path of attribute names)."""
    env = os.environ if env is None else env
    settings = Settings.rooted(Path(env["VOICEBOT_HOME"])) if env.get("VOICEBOT_HOME") else Settings()
    if config_file is None and env.get("VOICEBOT_CONFIG"):
        config_file = Path(env["VOICEBOT_CONFIG"])
    if config_file is not None:
        try:
            raw = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{config_file}: config file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{config_file}: not valid TOML: {e}") from None
        settings = _merge(settings, raw, str(config_file))
    for var, path in _ENV.items():
        if env.get(var):
            settings = _set(settings, path, env[var], var)
    for path, value in (overrides or {}).items():
        if value is not None:
            settings = _set(settings, path, value, "--" + path[-1].replace("_", "-"))
    if settings.asr.engine not in ("auto", "vosk", "pocketsphinx"):
        raise ConfigError(f"asr engine must be auto, vosk or pocketsphinx, not {settings.asr.engine!r}")
    if not 0 <= settings.http.port <= 65535:
        raise ConfigError(f"http port must be 0-65535, not {settings.http.port}")
    if settings.store.url and not settings.store.url.startswith(STORE_URL_SCHEMES):
        raise ConfigError(f"store url must start with {', '.join(STORE_URL_SCHEMES)} (or be empty for the SQLite "
                          f"file in the data directory), not {settings.store.url.split('://')[0]!r}")
    try:
        settings.sip.check()
    except VoicebotError as e:
        raise ConfigError(str(e)) from None
    return settings


def _merge(obj: Any, raw: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(obj)}
    changes = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {', '.join(known)})")
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: [{key}] must be a table")
            changes[key] = _merge(current, value, f"{where} [{key}]")
        else:
            changes[key] = _coerce(known[key].type, value, f"{where}: {key}")
    return replace(obj, **changes)


def _set(obj: Any, path: tuple[str, ...], value: Any, where: str) -> Any:
    head, *rest = path
    if rest:
        return replace(obj, **{head: _set(getattr(obj, head), tuple(rest), value, where)})
    typ = next(f.type for f in fields(obj) if f.name == head)
    return replace(obj, **{head: _coerce(typ, value, where)})


def _coerce(typ: Any, value: Any, where: str) -> Any:
    t = str(typ)
    try:
        if "Path" in t:
            return Path(value).expanduser() if value not in ("", None) else None
        if t.startswith("int"):
            return int(value)
        if t.startswith("float"):
            return float(value)
        if t.startswith("bool"):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        if t.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(i).strip() for i in items if str(i).strip())
        return None if value in ("", None) and "None" in t else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a valid {t}") from None
