"""The docker environment from the command line and behind ``runenv serve``: real
processes against a real daemon, and nothing of theirs left in it afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from run_environments.environments.docker import LABEL, OWNER
from run_environments.images import TEST_LANGUAGES
from tests.helpers import answers_every_api, is_running
from tests.server.hostile import RUNENV, serve_process, wait_for


def runenv(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNENV, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


@pytest.fixture
def docker_env(docker_host: str, image: str) -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": docker_host, "RUNENV_DOCKER_IMAGE": image}


def ours(client: docker.DockerClient, pid: int) -> list[str]:
    """The containers the process ``pid`` made."""
    found = client.containers.list(all=True, filters={"label": LABEL})
    return [c.short_id for c in found if c.labels.get(OWNER, "").startswith(f"{pid}:")]


def test_doctor_reports_docker_ready_with_its_image(docker_env: dict[str, str], image: str) -> None:
    done = runenv("doctor", "--json", env=docker_env)
    rows = {row["name"]: row for row in json.loads(done.stdout)["environments"]}
    docker_row = rows["docker"]
    assert docker_row["ready"] is True, docker_row
    assert any(image in note for note in docker_row["notes"]), docker_row
    languages = {lang["name"]: lang for lang in docker_row["languages"]}
    assert languages["python"]["available"] and languages["java"]["available"]
    assert "runenv images build --language ruby" in languages["ruby"]["missing"]


def test_doctor_says_how_to_get_a_missing_image(docker_env: dict[str, str]) -> None:
    env = {**docker_env, "RUNENV_DOCKER_IMAGE": "runenv-absent:1"}
    done = runenv("doctor", env=env)
    assert "✗ docker: the image 'runenv-absent:1' is not here: build it with `runenv images" in (
        done.stdout.replace("\n", " ")
    ), done.stdout


def test_doctor_says_when_no_daemon_answers(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    done = runenv("doctor", env=env)
    assert f"✗ docker: the Docker daemon is not running at unix://{tmp_path}" in (
        done.stdout.replace("\n", "")
    ), done.stdout


def test_run_in_docker_from_the_command_line(
    docker_env: dict[str, str], docker_client: docker.DockerClient
) -> None:
    done = runenv("run", "-E", "docker", "-c", "import sys; print(sys.argv[1:])", "--", "a b",
                  env=docker_env)  # fmt: skip
    assert done.returncode == 0 and done.stdout == "['a b']\n", done
    proc = subprocess.Popen(
        [RUNENV, "run", "-E", "docker", "-t", "1", "-c", "while True: pass"],
        env=docker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    proc.communicate(timeout=120)
    assert proc.returncode == 124
    assert ours(docker_client, proc.pid) == []  # the command removed its container at its end


def test_images_build_reuses_an_image_of_the_same_contents(
    docker_env: dict[str, str], image: str
) -> None:
    args = ["images", "build", "runenv-test"]
    for language in TEST_LANGUAGES:
        args += ["-l", language]
    done = runenv(*args, env=docker_env)
    assert done.returncode == 0 and done.stdout.strip() == image, done
    unknown = runenv("images", "build", "-l", "klingon", env=docker_env)
    assert unknown.returncode == 2 and "klingon" in unknown.stderr, unknown


@pytest.fixture
def served_docker(
    docker_host: str, image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, int]]:
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    (tmp_path / "workspaces").mkdir()
    with serve_process(tmp_path / "workspaces", environment="docker", docker_image=image,
                       grace=5) as served:  # fmt: skip
        yield served


def test_serve_with_the_docker_environment(
    served_docker: tuple[str, int], docker_client: docker.DockerClient
) -> None:
    base, pid = served_docker
    answers_every_api(base, "docker")
    assert ours(docker_client, pid) != []  # the long-lived container serves
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not is_running(pid), 60, "the server's end")
    assert ours(docker_client, pid) == []  # removed at shutdown


def test_a_killed_server_s_containers_are_swept_by_the_next(
    served_docker: tuple[str, int], docker_client: docker.DockerClient, docker_env: dict[str, str]
) -> None:
    base, pid = served_docker
    answer = httpx.post(f"{base}/v1/execute", json={"code": "print(1)"}, timeout=60).json()
    assert answer["stdout"] == "1\n"
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not is_running(pid), 30, "the server's end")
    assert ours(docker_client, pid) != []  # left by a server that could not clean up
    done = runenv("run", "-E", "docker", "-c", "print(2)", env=docker_env)
    assert done.stdout == "2\n", done
    assert ours(docker_client, pid) == []  # swept by the next start
