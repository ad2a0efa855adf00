"""Signals as E2B's in-sandbox daemon (envd, written in Go) names them in a command's status.

The E2B-compatible server writes these names and the E2B environment reads them back.
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
