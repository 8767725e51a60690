"""voicebot: an offline voice-bot telephony service."""

__version__ = "0.1.0"
