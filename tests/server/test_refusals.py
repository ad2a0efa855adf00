"""What a server refuses, and how: limits past its ceilings, text that is not text, paths that
cannot coexist, fetches past their bounds, tokens that protect nothing. Never a 500."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from run_environments import InvalidOptionsError, Limits
from run_environments.server import ServerSettings

from .conftest import running
from .hostile import RUNENV, free_port, metric

# -- ceilings -----------------------------------------------------------------------------
CEILINGS = [
    ("/v1/execute", {"code": "1", "limits": {"memory": 1 << 40}}, 422, "limits.memory"),
    ("/v1/execute", {"code": "1", "limits": {"disk": 1 << 50}}, 422, "limits.disk"),
    ("/v1/execute", {"code": "1", "limits": {"processes": 10**9}}, 422, "limits.processes"),
    ("/v1/execute", {"code": "1", "limits": {"open_files": 1 << 20}}, 422, "limits.open_files"),
    ("/v1/execute", {"code": "1", "limits": {"cpu_time": 1e300}}, 422, "limits.cpu_time"),
    ("/v1/execute", {"code": "1", "max_output_bytes": 1 << 30}, 422, "max_output_bytes"),
    ("/run_code", {"code": "1", "language": "python", "memory_limit_MB": 1 << 30}, 422,
     "limits.memory"),
    ("/api/v2/execute", {"language": "python", "files": [{"content": "1"}],
                         "run_memory_limit": 1 << 45}, 400, "limits.memory"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "status", "named"), CEILINGS)
def test_limits_past_the_ceilings_are_refused(
    http: httpx.Client, path: str, body: dict[str, Any], status: int, named: str
) -> None:
    response = http.post(path, json=body)
    assert response.status_code == status, response.text
    assert named in response.text and "at most" in response.text


def test_the_library_refuses_what_no_machine_can_give() -> None:
    with pytest.raises(InvalidOptionsError, match=r"limits\.cpu_time must be at most"):
        Limits(cpu_time=1e300)
    with pytest.raises(InvalidOptionsError, match=r"limits\.open_files must be at most"):
        Limits(open_files=1 << 21)


async def test_the_sandbox_refuses_rlimits_above_its_hard_limits(sandbox: Any) -> None:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with pytest.raises(InvalidOptionsError, match=f"limits.open_files may be at most {hard}"):
        await sandbox.execute("print(1)", limits=Limits(open_files=hard + 1))


test_the_sandbox_refuses_rlimits_above_its_hard_limits = pytest.mark.anyio(
    test_the_sandbox_refuses_rlimits_above_its_hard_limits
)


# -- malformed input ----------------------------------------------------------------------
LONE = "\ud800"
MALFORMED = [
    ("/v1/execute", {"code": f"print(1) # {LONE}"}, "code"),
    ("/v1/execute", {"code": "1", "env": {"A": LONE}}, "env"),
    ("/v1/execute", {"code": "1", "env": {LONE: "x"}}, "env"),
    ("/v1/execute", {"code": "1", "stdin": LONE}, "stdin"),
    ("/v1/execute", {"code": "1", "args": [LONE]}, "args"),
    ("/v1/execute", {"code": "1", "files": {LONE: "x"}}, "file path"),
    ("/v1/execute", {"code": "1", "files": {"f": LONE}}, "content of file"),
    ("/v1/execute", {"code": "1", "cwd": LONE}, "cwd"),
    ("/v1/execute", {"code": "1", "files": {"a": "x"}, "cwd": "a"}, "not a directory"),
    ("/v1/execute", {"code": "1", "files": {"a": "1", "a/b": "2"}}, "would be inside"),
    ("/v1/execute", {"code": "1", "files": {"main.py/x": "1"}}, "would be inside"),
    ("/v1/execute", {"code": "1", "fetch_files": [str(i) for i in range(1025)]}, "at most 1024"),
    ("/run_code", {"code": LONE, "language": "python"}, "code"),
    ("/run_code", {"code": "1", "language": "python", "stdin": LONE}, "stdin"),
    ("/api/v2/execute", {"language": "python", "files": [{"content": LONE}]}, "code"),
    ("/api/v2/execute", {"language": "python", "files": [{"content": "1"}], "args": [LONE]},
     "args"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "named"), MALFORMED)
def test_malformed_input_is_a_precise_4xx(
    http: httpx.Client, path: str, body: dict[str, Any], named: str
) -> None:
    response = http.post(
        path, content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert response.status_code in (400, 422), response.text
    assert named in response.text


@pytest.mark.parametrize("path", ["/v1/execute", "/run_code"])
def test_nan_is_a_422(http: httpx.Client, path: str) -> None:
    body = '{"code": "1", "language": "python", "timeout": NaN, "run_timeout": NaN}'
    response = http.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text


TEXT = st.text(st.characters(codec=None, categories=["Cs", "L", "N", "P", "Zs", "Cc"]), max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    code=TEXT, key=TEXT, value=TEXT, arg=TEXT, name=TEXT, stdin=TEXT,
    route=st.sampled_from(["native", "sandboxfusion", "piston"]),
)  # fmt: skip
def test_no_text_makes_a_server_error(
    http: httpx.Client, code: str, key: str, value: str, arg: str, name: str, stdin: str,
    route: str,
) -> None:  # fmt: skip
    body: dict[str, Any]
    if route == "native":
        path = "/v1/execute"
        body = {"code": code, "env": {key: value}, "args": [arg], "files": {name: value},
                "stdin": stdin, "cwd": name, "timeout": 5}  # fmt: skip
    elif route == "sandboxfusion":
        path = "/run_code"
        encoded = base64.b64encode(value.encode(errors="replace")).decode()
        body = {"code": code, "language": "python", "stdin": stdin, "files": {name: encoded},
                "fetch_files": [name], "run_timeout": 5}  # fmt: skip
    else:
        path = "/api/v2/execute"
        files = [{"content": code}, {"name": name, "content": value}]
        body = {"language": "python", "files": files, "args": [arg], "stdin": stdin,
                "run_timeout": 5000}  # fmt: skip
    response = http.post(
        path, content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert response.status_code < 500, response.text


# -- fetched files and metrics are bounded ------------------------------------------------
def test_fetching_hard_links_to_a_sparse_file_is_bounded(http: httpx.Client) -> None:
    code = (
        "import os\nwith open('sparse', 'wb') as f:\n    f.truncate(16 << 20)\n"
        "for i in range(16):\n    os.link('sparse', f'link{i}')"
    )
    body = {"code": code, "fetch_files": [f"link{i}" for i in range(16)]}
    response = http.post("/v1/execute", json=body)
    assert response.status_code == 200
    files = response.json()["files"]
    assert sum(len(base64.b64decode(v)) for v in files.values()) <= 32 << 20
    assert len(files) == 2
    assert len(response.content) < 64 << 20


def test_only_known_languages_become_metric_labels(http: httpx.Client, url: str) -> None:
    for i in range(50):
        response = http.post("/v1/execute", json={"code": "1", "language": f"invented{i}"})
        assert response.status_code == 422
        assert response.json()["error"]["language"] == f"invented{i}"  # refused, named
    text = http.get("/metrics").text
    assert "invented" not in text
    assert metric(url, 'runenv_executions_total{language="python",status="success"}') >= 0


# -- tokens -------------------------------------------------------------------------------
def test_an_empty_token_is_an_error() -> None:
    with pytest.raises(InvalidOptionsError, match="the API token is empty"):
        ServerSettings(token="")
    with pytest.raises(InvalidOptionsError, match="the API token is empty"):
        ServerSettings.from_env({"RUNENV_TOKEN": ""})


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_serve_refuses_an_empty_token(how: str) -> None:
    argv = [RUNENV, "serve", "--port", str(free_port())]
    env = dict(os.environ)
    if how == "flag":
        argv += ["--token", ""]
    else:
        env["RUNENV_TOKEN"] = ""
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "the API token is empty" in done.stderr


def test_serving_beyond_loopback_without_a_token_warns() -> None:
    proc = subprocess.Popen(
        [RUNENV, "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        said = proc.stderr.readline() + proc.stderr.readline()
        assert "WARNING" in said and "no API token" in said
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()


def test_a_tokened_server_still_answers_health(workspaces: Any) -> None:
    with running(ServerSettings(token="t0ken", environment="sandbox")) as base:
        assert httpx.get(f"{base}/healthz", timeout=10).status_code in (200, 503)
        assert httpx.post(f"{base}/v1/execute", json={"code": "1"}, timeout=10).status_code == 401
