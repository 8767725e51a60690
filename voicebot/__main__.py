import sys

from voicebot.cli import main

if __name__ == "__main__":  # recognizer worker processes import this module too
    sys.exit(main())
