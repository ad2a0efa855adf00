"""Signals as E2B's in-sandbox daemon (envd, written in Go) names them in a command's status.

The E2B-compatible server writes these names and the E2B environment reads them back;
:func:`signal_of` reads the signal out of an exit status, for every environment.
"""

from __future__ import annotations

import signal

GO_NAMES = {
    signal.SIGKILL: "killed", signal.SIGTERM: "terminated", signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted", signal.SIGINT: "interrupt", signal.SIGHUP: "hangup",
    signal.SIGPIPE: "broken pipe", signal.SIGBUS: "bus error", signal.SIGILL: "illegal instruction",
    signal.SIGFPE: "floating point exception", signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "file size limit exceeded",
}  # fmt: skip
"""How Go's ProcessState names the signal that ended a process."""

BY_GO_NAME = {name: sig for sig, name in GO_NAMES.items()}


def signal_of(status: int) -> signal.Signals | None:
    """The signal that ended a process, from its exit status as ``subprocess`` gives it
    (-N) or as bubblewrap and shells report one that killed their child (128+N); None for
    an ordinary exit."""
    number = -status if status < 0 else (status - 128 if 128 < status < 128 + signal.NSIG else 0)
    try:
        return signal.Signals(number) if number else None
    except ValueError:
        return None
