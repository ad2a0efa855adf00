"""Run-environments' driver inside Pyodide: runs one program as ``python3 file`` would, in a
fresh ``__main__``, and reads, writes and removes the run's files in the virtual file system.
Loaded once, before the memory snapshot the interpreters start from."""

import base64
import json
import os
import shutil
import stat
import sys
import traceback
import types
from collections.abc import Callable


def write(path: str, data: str) -> None:
    """Write base64 ``data`` at ``path``, making its directories."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(base64.b64decode(data))


def read(path: str) -> str | None:
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        with open(path, "rb") as fh:
            return base64.b64encode(fh.read()).decode()
    except OSError:
        return None


def remove(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)


def sleep_with(pause: Callable[[float], object]) -> None:
    """Make ``time.sleep`` wait on the host instead of spinning."""
    import time

    def sleep(seconds: float) -> None:
        seconds = float(seconds)
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            pause(min(left, 3600.0))

    sleep.__doc__ = time.sleep.__doc__
    time.sleep = sleep  # type: ignore[assignment]
    sys.modules.pop("_runenv_host", None)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return 1


def run(text: str) -> int:
    request = json.loads(text)
    path, *args = request["argv"]
    for directory in request["dirs"]:
        os.makedirs(directory, exist_ok=True)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = [path, *args]
    sys.path[0] = os.path.dirname(path)
    main = types.ModuleType("__main__")
    main.__file__ = path
    sys.modules["__main__"] = main
    try:
        with open(path, "rb") as fh:
            code = compile(fh.read(), path, "exec")
        exec(code, main.__dict__)
    except SystemExit as exc:
        status = _exit_code(exc.code)
    except BaseException as exc:  # as CPython prints it, without this function's frame
        tb = exc.__traceback__
        tb = tb.tb_next if tb is not None and not isinstance(exc, SyntaxError) else None
        traceback.print_exception(type(exc), exc, tb)
        status = 1
    else:
        status = 0
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    return status
