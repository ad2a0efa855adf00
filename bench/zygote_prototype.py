"""A fork server (zygote) prototype, run inside bubblewrap by bench_warm_designs.py: Python
started and its modules imported once; per run a child in fresh mount, PID and IPC
namespaces (a private /tmp and /workspace), capabilities dropped, no new privileges, the
sandbox's seccomp filter, then the code. Standard library only (it runs on the sandbox's
system Python). Protocol on stdin/stdout: u32 length + JSON request; u32 status + u32
length + output."""

import ctypes
import json
import os
import resource
import struct
import sys
import traceback

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWIPC = 0x00020000, 0x20000000, 0x08000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 0x4000, 1 << 18
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def check(result, what):
    if result != 0:
        raise OSError(ctypes.get_errno(), what)


def drop_capabilities():
    header = CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (CapData * 2)()
    check(libc.capset(ctypes.byref(header), data), "capset")
    for cap in range(64):  # the bounding set too, so that nothing regains them
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (fails without the capability: fine)


def load_filter(bpf):
    buffer = ctypes.create_string_buffer(bpf)
    program = SockFprog(len(bpf) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0), "seccomp")


def run(request, bpf, out_fd):
    check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC), "unshare")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "private")
    for where in (b"/tmp", b"/workspace"):
        check(libc.mount(b"tmpfs", where, b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64m"), "tmpfs")
    for name, text in request.get("files", {}).items():
        with open(os.path.join("/workspace", name), "w") as fh:
            fh.write(text)
    pid = os.fork()  # pid 1 of the new PID namespace: all of it dies with it
    if pid == 0:
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(out_fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        drop_capabilities()
        load_filter(bpf)
        os.chdir("/workspace")
        namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        status = 0
        try:
            exec(compile(request["code"], "main.py", "exec"), namespace)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            status = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    os.close(out_fd)
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def main():
    bpf = open(sys.argv[1], "rb").read()
    source, sink = os.fdopen(0, "rb", buffering=0), os.fdopen(1, "wb", buffering=0)
    sink.write(b"R")
    while True:
        head = source.read(4)
        if len(head) < 4:
            return
        request = json.loads(source.read(struct.unpack(">I", head)[0]))
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                run(request, bpf, write)
            except BaseException:
                traceback.print_exc(file=os.fdopen(write, "w"))
                os._exit(125)
        os.close(write)
        chunks = []
        while chunk := os.read(read, 65536):
            chunks.append(chunk)
        os.close(read)
        _, status = os.waitpid(pid, 0)
        output = b"".join(chunks)
        code = os.waitstatus_to_exitcode(status) & 0xFFFFFFFF
        sink.write(struct.pack(">II", code, len(output)) + output)


main()
