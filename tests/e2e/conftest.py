"""Test calls are synthesized once per session with the project's own generator."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicebot.config import PROJECT_ROOT
from voicebot.testing.callgen import build_spec

CORPUS = PROJECT_ROOT / "tests" / "corpus"


@pytest.fixture(scope="session")
def sample_calls(tmp_path_factory) -> list[Path]:
    """The ten reference sample calls, as WAVs."""
    return sorted(build_spec(CORPUS / "samples.json", tmp_path_factory.mktemp("samples")))


@pytest.fixture(scope="session")
def corpus_calls(tmp_path_factory) -> list[Path]:
    """The team's own held-out corpus of test calls, as WAVs."""
    return sorted(build_spec(CORPUS / "calls.json", tmp_path_factory.mktemp("corpus")))
