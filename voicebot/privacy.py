"""Keeping personal identity codes out of logs.

Logs are read by more people, and kept longer, than the application store, so
every log line that could carry a code goes through ``mask_personal_id``.
Transcripts are never logged at all: a code spoken as words cannot be found
by a pattern.
"""

from __future__ import annotations

import re
from typing import Mapping

# DDMMYY, century sign, three-digit individual number, check character.
_PERSONAL_ID = re.compile(r"(?<![0-9A-Za-z])(\d{6}[-+A-FU-Y])(\d{3})([0-9A-Y])(?![0-9A-Za-z])", re.IGNORECASE)


def mask_personal_id(text: str) -> str:
    """Hide the individual number of every code in ``text``: "131052-308T" -> "131052-***T"."""
    return _PERSONAL_ID.sub(lambda m: f"{m.group(1)}***{m.group(3)}", text)


def mask_fields(fields: Mapping[str, object]) -> dict[str, object]:
    """Intake fields fit for a log line."""
    return {name: mask_personal_id(value) if isinstance(value, str) else value for name, value in fields.items()}
