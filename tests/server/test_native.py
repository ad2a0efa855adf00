"""The native API over real HTTP."""

from __future__ import annotations

import base64
import json
import threading

import httpx
import pytest

from run_environments import LocalRunEnvironment
from run_environments.server import ServerSettings

from .conftest import running


def test_execute_returns_the_result(http: httpx.Client) -> None:
    response = http.post("/v1/execute", json={"code": "import sys; print(sys.argv[1:])",
                                              "args": ["a", "b c"]})  # fmt: skip
    assert response.status_code == 200
    data = response.json()
    assert data["stdout"] == "['a', 'b c']\n" and data["success"] is True
    assert data["environment"] == "sandbox" and data["language"] == "python"


def test_execute_all_the_options(http: httpx.Client) -> None:
    body = {
        "code": "import os, sys\nprint(os.environ['X'], sys.stdin.read(), open('f').read(),"
        " list(open('../b', 'rb').read()), os.getcwd())\nopen('/workspace/out', 'w').write('o')",
        "language": "py",
        "timeout": 10,
        "env": {"X": "x"},
        "stdin": "in",
        "files": {"d/f": "text"},
        "files_base64": {"b": base64.b64encode(b"\x00\x01").decode()},
        "cwd": "d",
        "limits": {"memory": 128 << 20, "open_files": 100},
        "fetch_files": ["out"],
    }
    data = http.post("/v1/execute", json=body).json()
    assert data["stdout"] == "x in text [0, 1] /workspace/d\n", data
    assert data["files"] == {"out": base64.b64encode(b"o").decode()}


def test_binary_stdin(http: httpx.Client) -> None:
    body = {"code": "import sys; print(list(sys.stdin.buffer.read()))",
            "stdin_base64": base64.b64encode(b"\xff\x00").decode()}  # fmt: skip
    assert http.post("/v1/execute", json=body).json()["stdout"] == "[255, 0]\n"


def test_failure_and_timeout_are_results(http: httpx.Client) -> None:
    data = http.post("/v1/execute", json={"code": "exit(4)"}).json()
    assert (data["success"], data["exit_code"]) == (False, 4)
    code = "import time\nprint('partial', flush=True)\ntime.sleep(30)"
    data = http.post("/v1/execute", json={"code": code, "timeout": 0.5}).json()
    assert data["timed_out"] and data["stdout"] == "partial\n"


def test_compiled_language_has_its_compile_result(http: httpx.Client) -> None:
    data = http.post("/v1/execute", json={"code": "int main(){return 3;}", "language": "c"}).json()
    assert data["exit_code"] == 3 and data["compile"]["success"] is True


def test_stream_sends_output_then_the_result(http: httpx.Client) -> None:
    code = "import sys, time\nprint('one', flush=True)\ntime.sleep(0.2)\nsys.stderr.write('two')"
    with http.stream("POST", "/v1/execute/stream", json={"code": code}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        items = [json.loads(line) for line in response.iter_lines() if line]
    streamed = {name: "".join(i[name] for i in items if name in i) for name in ("stdout", "stderr")}
    assert streamed == {"stdout": "one\n", "stderr": "two"}  # chunks may split anywhere
    assert "stdout" in items[0]  # output came before the result
    assert set(items[-1]) == {"result"}
    assert items[-1]["result"]["stdout"] == "one\n" and items[-1]["result"]["stderr"] == "two"


def test_languages(http: httpx.Client) -> None:
    data = http.get("/v1/languages").json()
    assert data["default"] == "sandbox"
    assert set(data["environments"]) == {"sandbox", "local"}
    python = next(x for x in data["environments"]["sandbox"]["languages"] if x["name"] == "python")
    assert python["available"] is True and "python3" in python["aliases"]


def test_health(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "ready": {"sandbox": True, "local": True}}


def test_metrics(http: httpx.Client) -> None:
    http.post("/v1/execute", json={"code": "print(1)", "language": "python"})
    http.post("/v1/execute", json={"code": "exit 1", "language": "bash"})
    text = http.get("/metrics").text
    assert 'runenv_executions_total{language="python",status="success"}' in text
    assert 'runenv_executions_total{language="bash",status="failure"}' in text
    assert "runenv_execution_seconds_bucket" in text
    assert "runenv_queue_length 0.0" in text and "runenv_in_flight 0.0" in text


def test_openapi_is_served(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    assert {"/v1/execute", "/v1/execute/stream", "/run_code", "/api/v2/execute"} <= set(
        schema["paths"]
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"code": "x", "language": "cobol"}, "unknown language 'cobol'"),
        ({"code": "x", "environment": "mars"}, "unknown environment 'mars'"),
        ({"code": "x", "timeout": 3600}, "at most 60 s"),
        ({"code": "x", "timeout": -1}, "greater than 0"),
        ({"code": "x", "files": {"../x": "y"}}, "inside the working directory"),
        ({"code": "x", "files_base64": {"a": "%%%"}}, "not valid base64"),
        ({"code": "x", "surprise": 1}, "Extra inputs"),
        ({"language": "python"}, "Field required"),
    ],
)
def test_bad_requests_get_a_precise_4xx(http: httpx.Client, body: dict, fragment: str) -> None:
    response = http.post("/v1/execute", json=body)
    assert response.status_code == 422
    assert fragment in response.text


def test_not_json_is_a_4xx(http: httpx.Client) -> None:
    response = http.post(
        "/v1/execute", content=b"\xff\xfe", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_body_size_limit(server_envs: dict) -> None:
    settings = ServerSettings(max_body_bytes=1000)
    with running(settings, {"sandbox": server_envs["sandbox"]}) as base:
        big = httpx.post(f"{base}/v1/execute", json={"code": "x" * 5000})
        assert big.status_code == 413 and "larger than 1000 bytes" in big.text
        chunked = httpx.post(f"{base}/v1/execute", content=iter([b"{" + b" " * 3000]),
                             headers={"content-type": "application/json"})  # fmt: skip
        assert chunked.status_code == 413
        assert httpx.post(f"{base}/v1/execute", json={"code": "print(1)"}).status_code == 200


def test_token(server_envs: dict) -> None:
    with running(ServerSettings(token="s3cret"), {"sandbox": server_envs["sandbox"]}) as base:
        body = {"code": "print(1)"}
        assert httpx.post(f"{base}/v1/execute", json=body).status_code == 401
        wrong = httpx.post(f"{base}/v1/execute", json=body, headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        right = httpx.post(f"{base}/v1/execute", json=body,
                           headers={"Authorization": "Bearer s3cret"})  # fmt: skip
        assert right.status_code == 200
        by_key = httpx.post(f"{base}/run_code", json={"code": "print(1)", "language": "python"},
                            headers={"X-API-Key": "s3cret"})  # fmt: skip
        assert by_key.json()["status"] == "Success"
        assert httpx.get(f"{base}/healthz").status_code == 200  # probes need no token


def test_local_only_when_allowed(server_envs: dict) -> None:
    with pytest.raises(ValueError, match="allow-local"):
        ServerSettings(environment="local")
    with running(ServerSettings(), {"sandbox": server_envs["sandbox"]}) as base:
        response = httpx.post(f"{base}/v1/execute", json={"code": "1", "environment": "local"})
        assert response.status_code == 422 and "--allow-local" in response.text
        assert response.json()["error"]["environment"] == "local"


def test_backpressure(workspaces) -> None:
    settings = ServerSettings(max_concurrency=1, max_queue=1, environment="local", allow_local=True)
    env = LocalRunEnvironment(tmp_dir=str(workspaces))
    with running(settings, {"local": env}) as base:
        slow = {"code": "import time; time.sleep(1.5)", "language": "python"}
        answers: list[httpx.Response] = []

        def call() -> None:
            answers.append(httpx.post(f"{base}/v1/execute", json=slow, timeout=30))

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 200, 429, 429]  # one runs, one waits, two are refused
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.headers["retry-after"] == "1"
        assert "runenv_rejected_total 2.0" in httpx.get(f"{base}/metrics").text


def test_error_bodies_carry_structured_fields(http: httpx.Client) -> None:
    error = http.post("/v1/execute", json={"code": "1", "language": "cobol"}).json()["error"]
    assert error["type"] == "UnknownLanguageError" and error["language"] == "cobol"
    assert "python" in error["supported"]
    error = http.post("/v1/execute", json={"code": "1", "environment": "x"}).json()["error"]
    assert error == {
        "message": error["message"],
        "type": "UnknownEnvironmentError",
        "environment": "x",
        "known": ["local", "sandbox"],
    }
