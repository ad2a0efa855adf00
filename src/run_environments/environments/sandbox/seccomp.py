"""The seccomp filter of the sandbox, compiled to BPF with libseccomp.

Everything is allowed except what untrusted code never needs; refused calls fail with an
errno (the program sees an ordinary error, nothing is killed), so a language runtime that
probes for a feature degrades the way it does on a hardened host.
"""

from __future__ import annotations

import errno
import functools
import os
import socket

from ..._errors import EnvironmentUnavailableError

REFUSED = (
    # debugging and reading other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # file systems and namespaces
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
    "fsopen", "fsmount", "fsconfig", "fspick", "mount_setattr", "unshare", "setns",
    "open_by_handle_at", "name_to_handle_at", "quotactl", "quotactl_fd",
    # the kernel itself
    "bpf", "perf_event_open", "init_module", "finit_module", "delete_module", "kexec_load",
    "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "syslog", "lookup_dcookie",
    "iopl", "ioperm", "userfaultfd", "fanotify_init", "vhangup",
    # io_uring performs refused operations (sockets of any family, for one) on the
    # program's behalf, where no filter sees them; Docker's default profile refuses it too
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # keys
    "keyctl", "add_key", "request_key",
    # clocks
    "clock_settime", "clock_adjtime", "settimeofday", "adjtimex", "stime",
)  # fmt: skip

LOOPBACK_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)
"""Socket families a run without the network may make."""
LAST_FAMILY = 63
"""Families above it are refused by one rule (Linux has fewer than 50)."""
SOCK_PACKET = 10
SOCKET_TYPE_MASK = 0xF
"""The type bits of socket()'s second argument (the rest are SOCK_NONBLOCK, SOCK_CLOEXEC)."""

NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                   0x40000000)  # fmt: skip
"""CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET."""


@functools.cache
def compile_filter(network: bool) -> bytes:
    """The BPF program for the sandbox; sockets other than AF_UNIX, AF_INET and AF_INET6
    are refused unless ``network`` is true, raw IP and AF_VSOCK always. Socket creation has
    no other way in on this architecture (``socketcall`` and the 32-bit ABI are outside the
    filter's architecture, which kills the caller); io_uring, which could make sockets, is
    refused.

    :raises EnvironmentUnavailableError: if libseccomp cannot be loaded.
    """
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError, RuntimeError) as exc:  # the binding loads libseccomp.so.2
        raise EnvironmentUnavailableError(
            f"libseccomp is not usable ({exc}); install it: apt-get install libseccomp2"
        ) from exc
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    refuse = seccomp.ERRNO(errno.EPERM)
    for name in REFUSED:
        try:
            rules.add_rule(refuse, name)
        except (RuntimeError, ValueError, OSError):
            continue  # not a system call on this architecture
    # clone may not make namespaces; clone3 hides its flags in memory, so make callers
    # fall back to clone, as container runtimes do.
    for flag in NAMESPACE_FLAGS:
        rules.add_rule(refuse, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    refuse_family = seccomp.ERRNO(errno.EAFNOSUPPORT)
    if not network:
        # Unix sockets, and IP on the run's own loopback (its network namespace has no
        # other interface): a program may serve and call itself on 127.0.0.1 or ::1.
        for family in range(LAST_FAMILY + 1):
            if family not in LOOPBACK_FAMILIES:
                rules.add_rule(refuse_family, "socket", seccomp.Arg(0, seccomp.EQ, family))
        rules.add_rule(refuse_family, "socket", seccomp.Arg(0, seccomp.GT, LAST_FAMILY))
    else:  # a network namespace does not confine vsock: it reaches the hypervisor's host
        rules.add_rule(refuse_family, "socket", seccomp.Arg(0, seccomp.EQ, socket.AF_VSOCK))
    for family in (socket.AF_INET, socket.AF_INET6):  # no raw IP, whatever the network
        for kind in (socket.SOCK_RAW, SOCK_PACKET):
            rules.add_rule(
                seccomp.ERRNO(errno.EPERM),
                "socket",
                seccomp.Arg(0, seccomp.EQ, family),
                seccomp.Arg(1, seccomp.MASKED_EQ, SOCKET_TYPE_MASK, kind),
            )
    read, write = os.pipe()  # the program is a few hundred bytes: it fits in the pipe
    with os.fdopen(read, "rb") as source:
        with os.fdopen(write, "wb") as sink:
            rules.export_bpf(sink)
        return source.read()
