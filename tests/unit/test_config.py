"""Settings: file, then environment, then command line; errors in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicebot.config import PROJECT_ROOT, ConfigError, Settings, load_settings


def test_defaults_point_into_the_checkout():
    s = load_settings(env={})
    assert s.scenario.name == "benefits.toml" and s.scenario.exists()
    assert s.asr.engine == "auto" and s.listen.end_silence_ms == 500


def test_file_then_environment_then_command_line(tmp_path: Path):
    cfg = tmp_path / "voicebot.toml"
    cfg.write_text('[asr]\nengine = "vosk"\n[listen]\nend_silence_ms = 400\n[tts]\nrate_wpm = 150\n')
    s = load_settings(cfg, env={"VOICEBOT_TTS_RATE": "160", "VOICEBOT_ENGINE": "pocketsphinx"},
                      overrides={("listen", "end_silence_ms"): 350})
    assert s.asr.engine == "pocketsphinx"
    assert s.tts.rate_wpm == 160
    assert s.listen.end_silence_ms == 350


def test_vosk_model_from_environment_is_a_path():
    s = load_settings(env={"VOICEBOT_VOSK_MODEL": "/models/en"})
    assert s.asr.vosk_model == Path("/models/en")


def test_home_moves_every_project_path(tmp_path: Path):
    s = load_settings(env={"VOICEBOT_HOME": str(tmp_path)})
    assert s == Settings.rooted(tmp_path)
    assert s.asr.grammars_dir == tmp_path / "grammars"


def test_phone_service_tables_nest_and_the_environment_reaches_them(tmp_path: Path):
    cfg = tmp_path / "voicebot.toml"
    cfg.write_text('[http]\nport = 9000\n[sip]\nmax_calls = 12\ncodecs = "PCMU"\n'
                   '[sip.transfer]\nmode = "bridge"\ntarget_uri = "sip:agents@pbx.test"\n'
                   '[recording]\nenabled = true\n')
    s = load_settings(cfg, env={"VOICEBOT_SIP_PORT": "5070"})
    assert (s.http.port, s.sip.port, s.sip.max_calls) == (9000, 5070, 12)
    assert s.sip.transfer.target_uri == "sip:agents@pbx.test" and s.sip.legs_per_call == 2
    # bridged calls take two of a worker's four PJSIP call slots: six workers for twelve calls
    assert s.sip.worker_count == 6
    assert s.recording.enabled and s.recordings_dir == s.data_dir / "recordings"


@pytest.mark.parametrize("text, message", [
    ('[asr]\nengin = "vosk"\n', "unknown setting 'engin'"),
    ('[sip]\ncodecs = "OPUS"\n', "sip codecs must be a list of"),
    ('[sip.transfer]\nmode = "teleport"\n', "must be refer or bridge"),
    ('[http]\nport = 70000\n', "http port must be 0-65535"),
    ('[listen]\nend_silence_ms = "soon"\n', "not a valid int"),
    ('[asr\n', "not valid TOML"),
    ('[asr]\nengine = "whisper"\n', "must be auto, vosk or pocketsphinx"),
])
def test_bad_settings_are_one_clear_line(tmp_path: Path, text: str, message: str):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_config_file_names_it(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", env={})


def test_the_settings_documented_in_docs_sip_md_load_as_written(tmp_path: Path):
    doc = (PROJECT_ROOT / "docs" / "sip.md").read_text()
    block = doc.split("## Settings", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    cfg = tmp_path / "documented.toml"
    cfg.write_text(block)
    s = load_settings(cfg, env={})
    assert s.sip.security.rate_limit_requests == 100 and s.sip.security.users == ("voicebot",)
    assert s.sip.worker_count == 5 and s.http.host == "127.0.0.1"
