"""SandboxFusion's /run_code, field by field."""

from __future__ import annotations

import base64

import httpx
import pytest

STAGE_FIELDS = {"status", "execution_time", "return_code", "stdout", "stderr", "cpu_time"}
RESPONSE_FIELDS = {
    "status",
    "message",
    "compile_result",
    "run_result",
    "executor_pod_name",
    "files",
}


def run_code(http: httpx.Client, **body: object) -> dict:
    response = http.post("/run_code", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert set(data) == RESPONSE_FIELDS
    for stage in ("compile_result", "run_result"):
        assert data[stage] is None or set(data[stage]) == STAGE_FIELDS
    return data


def test_success(http: httpx.Client) -> None:
    data = run_code(http, code="print(input() * 2)", language="python", stdin="ab")
    assert data["status"] == "Success" and data["message"] == ""
    run = data["run_result"]
    assert run["status"] == "Finished" and run["return_code"] == 0 and run["stdout"] == "abab\n"
    assert run["stderr"] == "" and isinstance(run["execution_time"], float)
    assert data["compile_result"] is None and data["files"] == {}


def test_nonzero_exit_is_failed(http: httpx.Client) -> None:
    data = run_code(http, code="console.error('bad'); process.exit(2)", language="nodejs")
    assert data["status"] == "Failed"
    assert data["run_result"]["return_code"] == 2 and data["run_result"]["stderr"] == "bad\n"


def test_time_limit_keeps_partial_output(http: httpx.Client) -> None:
    code = "import time\nprint('started', flush=True)\ntime.sleep(30)"
    data = run_code(http, code=code, language="python", run_timeout=0.5)
    assert data["status"] == "Failed"
    run = data["run_result"]
    assert run["status"] == "TimeLimitExceeded" and run["stdout"] == "started\n"
    assert run["return_code"] in (-15, -9)


def test_compile_failure_has_no_run_result(http: httpx.Client) -> None:
    data = run_code(http, code="int main() { return nope; }", language="cpp")
    assert data["status"] == "Failed" and data["run_result"] is None
    compiled = data["compile_result"]
    assert compiled["status"] == "Finished" and compiled["return_code"] != 0
    assert "nope" in compiled["stderr"]


def test_compiled_success(http: httpx.Client) -> None:
    code = '#include <iostream>\nint main() { std::cout << "c++" << std::endl; }'
    data = run_code(http, code=code, language="cpp")
    assert data["status"] == "Success"
    assert data["compile_result"]["return_code"] == 0
    assert data["run_result"]["stdout"] == "c++\n"


def test_files_and_fetch_files(http: httpx.Client) -> None:
    code = "open('out.txt', 'w').write(open('data/in.txt').read().upper())"
    files = {"data/in.txt": base64.b64encode(b"hello").decode()}
    data = run_code(http, code=code, language="python", files=files,
                    fetch_files=["out.txt", "missing.txt"])  # fmt: skip
    assert data["status"] == "Success"
    assert data["files"] == {"out.txt": base64.b64encode(b"HELLO").decode()}


def test_memory_limit(http: httpx.Client) -> None:
    code = "x = bytearray(200 << 20)\nprint('allocated')"
    data = run_code(http, code=code, language="python", memory_limit_MB=64)
    assert data["status"] == "Failed" and data["run_result"]["return_code"] == -9
    assert data["message"] == "killed: out of memory"


def test_language_it_cannot_run_is_a_sandbox_error(http: httpx.Client) -> None:
    data = run_code(http, code="println(1)", language="julia")
    assert data["status"] == "SandboxError" and "julia" in data["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"code": "x", "language": "cobol"},
        {"code": "x"},
        {"language": "python"},
        {"code": "x", "language": "python", "run_timeout": 0},
        {"code": "x", "language": "python", "files": {"a": "not base64!"}},
        {"code": "x", "language": "python", "files": {"/etc/profile.d/x.sh": ""}},
        {"code": "x", "language": "python", "files": {"/tmp/../etc/x": ""}},
        {"code": "x", "language": "python", "files": {"../up": ""}},
        {"code": "x", "language": "python", "fetch_files": ["/proc/self/environ"]},
    ],
)
def test_malformed_is_422(http: httpx.Client, body: dict) -> None:
    assert http.post("/run_code", json=body).status_code == 422


def test_absolute_paths_in_writable_places(http: httpx.Client) -> None:
    """SandboxFusion's clients name files in /tmp and /mnt/data, as its sandbox offers."""
    code = (
        "import os\nprint(open('/tmp/in.txt').read(), open('/mnt/data/table.csv').read())\n"
        "os.makedirs('/mnt/data/out', exist_ok=True)\n"
        "open('/mnt/data/out/answer.txt', 'w').write('42')\nopen('/tmp/log.txt', 'w').write('ok')"
    )
    files = {"/tmp/in.txt": base64.b64encode(b"in").decode(),
             "/mnt/data/table.csv": base64.b64encode(b"a,b").decode()}  # fmt: skip
    fetch = ["/mnt/data/out/answer.txt", "/tmp/log.txt", "/tmp/never.txt"]
    data = run_code(http, code=code, language="python", files=files, fetch_files=fetch)
    assert data["status"] == "Success", data
    assert data["run_result"]["stdout"] == "in a,b\n"
    assert {k: base64.b64decode(v) for k, v in data["files"].items()} == {
        "/mnt/data/out/answer.txt": b"42",
        "/tmp/log.txt": b"ok",
    }


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("csharp", 'class P { static void Main() { System.Console.WriteLine("ok"); } }'),
        ("R", 'cat("ok\\n")'),
        ("racket", '#lang racket/base\n(displayln "ok")'),
    ],
)
def test_more_of_its_languages(http: httpx.Client, language: str, code: str) -> None:
    data = run_code(http, code=code, language=language)
    assert data["status"] == "Success", data
    assert data["run_result"]["stdout"] == "ok\n"
