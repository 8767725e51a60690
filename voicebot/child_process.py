"""Child processes that end with the process that started them (Linux's parent-death signal)."""

from __future__ import annotations

import ctypes
import shutil
import signal
from typing import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent() -> tuple[list[str], Callable[[], None] | None]:
    """The command prefix and ``preexec_fn`` that give a child SIGTERM when this process dies.

    setpriv (util-linux) sets that up between fork and exec. A ``preexec_fn``, the fallback
    without it, runs Python in the child, which is not safe in a process with threads, and makes
    Python fork the whole process instead of vfork: 0.5 s of a big test process's CPU.
    """
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, "--pdeathsig", "TERM", "--"], None
    return [], set_death_signal


def set_death_signal(sig: signal.Signals = signal.SIGTERM) -> None:
    """This process gets ``sig`` when its parent dies (where the platform has prctl)."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        pass
