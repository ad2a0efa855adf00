"""The fork server of warm Python runs; its source is run inside bubblewrap by the sandbox's
own ``python3 -c`` (standard library only: it never imports this package).

It starts once, imports what programs commonly import, and then serves runs over its
control socket (a ``SOCK_SEQPACKET`` socket, the descriptor its argument names, whose other
end the host holds). Each run is set up ahead, as soon as the host has made its directory
(``prepare``), while the run before it may still be running:

- the server forks a *runner*, which enters fresh mount, PID, IPC and (without the host's
  network) network namespaces, binds the run's own directory (``<place>`` in the server's
  directory of runs, which is at ``/tmp``) at ``/workspace``, and mounts a fresh ``/tmp``
  (over the directory of runs: no other run's directory is in view) and ``/dev/shm``;
- the runner forks the *init* of the new PID namespace, which mounts a fresh ``/proc`` and
  forks the *program*; runner, init and program say who they are (the host learns their
  pids from the socket's credentials and puts init and program in the run's cgroup when the
  run comes); the program passes the host a socket of its own, where only its run will come;
- the program receives the run with its three pipes, sizes ``/tmp`` and ``/dev/shm``, starts
  a session of its own, takes the pipes as 0, 1 and 2, closes every other descriptor, sets
  the run's rlimits and environment (and what /proc shows of its command line and
  environment), drops every capability, sets ``no_new_privs``, loads the sandbox's seccomp
  filter and runs the script as ``python3 script args`` would;
- the init then lets go of the socket and of its capabilities (its program sees it as pid
  1) and exits with the program's status (128 + N for a signal, as bubblewrap reports it),
  which takes every process of the namespace with it; the runner reports that status and
  exits (the host waits for the runner's end).

Messages are JSON objects, those about a run with its ``id``.
"""

import atexit

# What programs commonly import, imported once here so that no run pays for it.
import bisect  # noqa: F401
import collections  # noqa: F401
import contextlib
import copy  # noqa: F401
import ctypes
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import fcntl
import fractions  # noqa: F401
import functools
import gc
import hashlib  # noqa: F401
import heapq  # noqa: F401
import importlib.machinery
import io
import itertools  # noqa: F401
import json
import math  # noqa: F401
import os
import random  # noqa: F401  (reseeded in every fork by the module itself)
import re  # noqa: F401
import resource
import signal
import socket
import string  # noqa: F401
import struct
import sys
import threading
import types
import typing  # noqa: F401
from typing import Any

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWIPC, CLONE_NEWNET = 0x20000, 0x20000000, 0x8000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 0x4000, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
PR_SET_MM, PR_SET_MM_MAP = 35, 14
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 1
RLIMITS = {"nofile": resource.RLIMIT_NOFILE, "fsize": resource.RLIMIT_FSIZE,
           "cpu": resource.RLIMIT_CPU}  # fmt: skip

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]  # fmt: skip


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]  # fmt: skip


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def mount(
    source: bytes, target: bytes, kind: bytes | None, flags: int, data: bytes | None = None
) -> None:
    check(libc.mount(source, target, kind, flags, data), f"mount {target.decode()}")


def send(message: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
    data = json.dumps(message).encode()
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
        CHANNEL.sendmsg([data], ancillary)
    else:
        CHANNEL.send(data)


def receive(channel: socket.socket) -> tuple[Any, list[int]]:
    """A message and the descriptors it carries; None at the end of the host's side."""
    data, ancillary, _, _ = channel.recvmsg(1 << 16, socket.CMSG_SPACE(16 * 4))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += struct.unpack(f"{len(payload) // 4}i", payload[: len(payload) // 4 * 4])
    return (json.loads(data) if data else None), fds


def child(body: Any, run: int | None, failure: int) -> None:
    """A forked child's whole life: ``body``, then its end. Nothing it raises reaches the
    frames it was forked from; a failure is said to the host (when ``run`` is given and the
    socket is still open) and ends it with status ``failure``."""
    try:
        body()
    except BaseException as exc:
        if run is not None:
            with contextlib.suppress(BaseException):
                send({"id": run, "error": f"{type(exc).__name__}: {exc}"})
        os._exit(failure)
    os._exit(0)


# -- the runner: fresh namespaces and mounts ------------------------------------------------
def enter(network: bool, place: bytes) -> None:
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC
    if not network:
        flags |= CLONE_NEWNET
    check(libc.unshare(flags), "unshare")
    mount(b"none", b"/", None, MS_REC | MS_PRIVATE)
    mount(b"/tmp/" + place, b"/workspace", None, MS_BIND)
    mount(b"none", b"/workspace", None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)
    # Over the server's directory of runs: no other run's directory stays in view (the
    # server's mounts are locked in this namespace, which belongs to a nested user
    # namespace, so they are covered rather than unmounted).
    for point in (b"/tmp", b"/dev/shm"):  # sized for the run once it is known
        mount(b"tmpfs", point, b"tmpfs", MS_NOSUID | MS_NODEV, b"size=4k,mode=0755")
    if not network:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            flags_of = fcntl.ioctl(probe, SIOCGIFFLAGS, struct.pack("16sH", b"lo", 0))
            up = struct.unpack("16sH", flags_of[:18])[1] | IFF_UP
            fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack("16sH", b"lo", up))


def runner(prepare: dict[str, Any]) -> None:
    """The runner's life: namespaces, then the init, until the init ends."""
    enter(prepare["network"], prepare["place"].encode())
    init = os.fork()
    if init == 0:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        child(lambda: init_main(prepare["id"]), prepare["id"], 125)
    send({"id": prepare["id"], "runner": True})  # the host waits for our end
    _, status = os.waitpid(init, 0)
    send({"id": prepare["id"], "status": os.waitstatus_to_exitcode(status)})


# -- the init of the run's PID namespace ----------------------------------------------------
def init_main(run: int) -> None:
    mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    program = os.fork()
    if program == 0:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        child(lambda: program_main(run), None, 127)  # a failure before the script: as exec's
    # As the init of a PID namespace, with no handler: signals from outside (the host's
    # SIGINT or SIGTERM for the program) pass it by, as they pass bubblewrap's init. (The
    # program, forked before, keeps the interpreter's own handlers.)
    for number in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            signal.signal(number, signal.SIG_DFL)
    send({"id": run, "init": True})  # the host reads our pid from the credentials
    # From here on the init holds nothing and may do nothing its program may not: the
    # program can see it (as pid 1) and read what /proc shows of it.
    CHANNEL.close()
    drop_capabilities()
    while True:  # reap orphans until the program ends; its end ends the namespace
        pid, status = os.wait()
        if pid == program:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)  # as bubblewrap reports a signal


# -- the program ----------------------------------------------------------------------------
def drop_capabilities() -> None:
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # past the last one: EINVAL, harmless
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = CapHeader(0x20080522, 0)
    check(libc.capset(ctypes.byref(header), (CapData * 2)()), "capset")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


class MmMap(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "start_code", "end_code", "start_data", "end_data", "start_brk", "brk", "start_stack",
        "arg_start", "arg_end", "env_start", "env_end", "auxv")] + [
        ("auxv_size", ctypes.c_uint32), ("exe_fd", ctypes.c_uint32)]  # fmt: skip


SHOWN: list[Any] = []
"""The buffers /proc/self/cmdline and /proc/self/environ show (kept alive)."""


def show(argv: list[str], env: dict[str, str]) -> None:
    """Make /proc/self/cmdline and /proc/self/environ the run's, as after an exec."""
    arguments = b"".join(os.fsencode(arg) + b"\0" for arg in argv)
    variables = b"".join(os.fsencode(f"{k}={v}") + b"\0" for k, v in env.items())
    with open("/proc/self/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    libc.sbrk.restype = ctypes.c_void_p
    buffers = [ctypes.create_string_buffer(data, len(data)) for data in (arguments, variables)]
    addresses = [ctypes.addressof(buffer) for buffer in buffers]
    layout = MmMap(
        start_code=int(fields[23]), end_code=int(fields[24]), start_data=int(fields[42]),
        end_data=int(fields[43]), start_brk=int(fields[44]), brk=libc.sbrk(0),
        start_stack=int(fields[25]), arg_start=addresses[0],
        arg_end=addresses[0] + len(arguments), env_start=addresses[1],
        env_end=addresses[1] + len(variables), auxv=0, auxv_size=0, exe_fd=0xFFFFFFFF,
    )  # fmt: skip
    check(libc.prctl(PR_SET_MM, PR_SET_MM_MAP, ctypes.byref(layout), ctypes.sizeof(layout), 0),
          "prctl(PR_SET_MM_MAP)")  # fmt: skip
    SHOWN[:] = buffers


def drop_privileges(bpf: bytes) -> None:
    drop_capabilities()
    buffer = ctypes.create_string_buffer(bpf)
    program = SockFprog(len(bpf) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0), "seccomp")


def program_main(run: int) -> None:
    """Waits, set up, for the run on a socket of its own (the host has put it in the run's
    cgroup by then), then runs it."""
    own, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    send({"id": run, "program": True}, (theirs.fileno(),))
    theirs.close()
    CHANNEL.close()
    request, pipes = receive(own)
    if request is None or len(pipes) != 3:
        os._exit(125)
    for place, size in ((b"/tmp", request["tmp_size"]), (b"/dev/shm", request["shm_size"])):
        mount(b"none", place, None, MS_REMOUNT | MS_NOSUID | MS_NODEV, f"size={size}".encode())
    os.setsid()  # kill(0) reaches this run's processes only, not the server's group
    for target, fd in enumerate(pipes):
        os.dup2(fd, target)
    os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    os.chdir(request["cwd"])
    for name, value in request["rlimits"].items():
        resource.setrlimit(RLIMITS[name], tuple(value))
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["PWD"] = request["cwd"]  # as bubblewrap sets it
    show(request["argv"], dict(os.environ))
    if os.environ.get("PYTHONUNBUFFERED"):  # as the interpreter makes them for -u
        for fd, name in ((1, "stdout"), (2, "stderr")):
            old = getattr(sys, name)
            raw = io.FileIO(fd, "w", closefd=False)
            new = io.TextIOWrapper(raw, old.encoding, old.errors, write_through=True)
            setattr(sys, name, new)
            setattr(sys, f"__{name}__", new)
    drop_privileges(BPF)
    os._exit(python_main(request["argv"]))


def python_main(argv: list[str]) -> int:
    """What ``python3 script args`` does with the script, from here on; its exit status."""
    script = os.path.abspath(argv[1])
    sys.argv = list(argv[1:])
    sys.orig_argv = list(argv)
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    main = types.ModuleType("__main__")
    loader = importlib.machinery.SourceFileLoader("__main__", script)
    main.__dict__.update(
        __file__=script, __cached__=None, __builtins__=__builtins__, __loader__=loader
    )
    sys.modules["__main__"] = main
    code = 0
    try:
        try:
            with open(script, "rb") as handle:
                source = handle.read()
        except OSError as exc:
            message = f"{sys.executable}: can't open file {argv[1]!r}: [Errno {exc.errno}] "
            sys.stderr.write(f"{message}{exc.strerror}\n")
            return 2
        exec(compile(source, script, "exec", dont_inherit=True), main.__dict__)
    except SystemExit as exc:
        code = exit_code(exc)
    except BaseException as exc:
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        if isinstance(exc, SyntaxError):  # raised by compile(): no frame of the script
            tb = None
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        code = 1
        if isinstance(exc, KeyboardInterrupt):
            code = -signal.SIGINT
    return finish(code)


def exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    sys.stderr.write(f"{exc.code}\n")
    return 1


def finish(code: int) -> int:
    """The interpreter's own end: threads joined, atexit handlers, standard streams flushed."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except BaseException:
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            code = 120 if code == 0 else code
    if code < 0:  # died of SIGINT, as the interpreter does after a KeyboardInterrupt
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


# -- the server ------------------------------------------------------------------------------
def serve() -> None:
    global BPF
    hello, _ = receive(CHANNEL)
    BPF = bytes.fromhex(hello["seccomp"])
    gc.collect()
    gc.freeze()  # what is here stays shared with every fork, untouched by their collections
    send({"ready": True})
    while True:
        message, _ = receive(CHANNEL)  # the host made the next run's directory
        if message is None:
            return
        pid = os.fork()
        if pid == 0:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            prepare = message["prepare"]
            child(functools.partial(runner, prepare), prepare["id"], 0)
        with contextlib.suppress(ChildProcessError):  # runners of runs that ended
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass


BPF = b""
if __name__ == "__main__":  # run by ``python3 -c`` in the sandbox; never on import
    CHANNEL = socket.socket(fileno=int(sys.argv[1]))
    serve()
