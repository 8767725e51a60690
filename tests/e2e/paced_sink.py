"""A loudspeaker for the ALSA test PCM: takes what is played at real-time pace and keeps it in a file.

ALSA's ``null`` PCM has no clock: a stream on it runs as fast as the CPU allows
(avail is always the whole buffer). The ``file`` plugin can pipe playback into a
command (``file "|command"``); this command reads that pipe no faster than the
sample rate, so the pipe fills and the full-duplex stream waits, like a sound
card's clock makes it wait. Usage (ALSA fills in %r and %c)::

    python paced_sink.py OUT.raw RATE_HZ CHANNELS
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

#: Linux fcntl: set a pipe's capacity; a small pipe keeps the sink close to real time
F_SETPIPE_SZ = 1031
PIPE_BYTES = 4096
READ_BYTES = 1024


def main(out_path: str, rate_hz: int, channels: int) -> None:
    bytes_per_s = rate_hz * channels * 2
    try:
        fcntl.fcntl(sys.stdin.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # not a pipe (run by hand): pacing still holds, only with more slack
    t0 = time.monotonic()
    taken = 0
    with open(out_path, "wb", buffering=0) as out:
        while chunk := os.read(sys.stdin.fileno(), READ_BYTES):
            out.write(chunk)
            taken += len(chunk)
            ahead_s = t0 + taken / bytes_per_s - time.monotonic()
            if ahead_s > 0:
                time.sleep(ahead_s)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
