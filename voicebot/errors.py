"""The base of every error a user can fix: printed as one line, never a traceback."""

from __future__ import annotations


class VoicebotError(Exception):
    """Its message is one line saying what is wrong and where."""
