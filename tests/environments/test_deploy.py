"""Packaging and deploying the executor: the package runs on a bare interpreter, and
``runenv deploy lambda`` creates and updates a function on moto's Lambda API (server mode,
on 127.0.0.1)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from run_environments.environments.serverless.deploy import HANDLER, build_package
from tests.serverless import moto_server

SYSTEM_PYTHON = "/usr/bin/python3"
ROLE_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def test_the_package_runs_on_an_interpreter_with_nothing_installed(tmp_path: Path) -> None:
    package = build_package()
    assert package == build_package()  # the same sources, the same bytes
    zipfile.ZipFile(io.BytesIO(package)).extractall(tmp_path)
    script = (
        "import json, sys\n"
        "sys.path.insert(0, '.')\n"
        "from run_environments.environments.serverless import executor\n"
        "print(json.dumps(executor.handler(json.loads(sys.argv[1]), None)))\n"
        "import anyio, os, run_environments\n"
        "for module in (anyio, run_environments):\n"
        "    assert module.__file__.startswith(os.getcwd()), module.__file__\n"
    )
    request = {"code": "import sys; print('hi'); sys.exit(4)", "stdin": None}
    # -S: none of this machine's site-packages, so everything comes from the package
    done = subprocess.run(
        [SYSTEM_PYTHON, "-S", "-c", script, json.dumps(request)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "RUNENV_TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[0])["result"]
    assert (result["stdout"], result["exit_code"]) == ("hi\n", 4)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture
def aws(moto: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    variables = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


def runenv(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    runenv = str(Path(sys.executable).parent / "runenv")
    return subprocess.run(
        [runenv, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_deploy_creates_then_updates_the_function(moto: str, aws: dict[str, str]) -> None:
    iam = boto3.client("iam", endpoint_url=moto)
    role = iam.create_role(RoleName="runenv-executor", AssumeRolePolicyDocument=ROLE_POLICY)
    arn = role["Role"]["Arn"]
    created = runenv(
        "deploy", "lambda", "runenv-test", "--role", arn, "--endpoint-url", moto, env=aws
    )
    assert created.returncode == 0, created.stderr
    assert "creating runenv-test" in created.stderr
    said = json.loads(created.stdout)
    lam = boto3.client("lambda", endpoint_url=moto)
    function = lam.get_function(FunctionName="runenv-test")["Configuration"]
    assert said["arn"] == function["FunctionArn"]
    assert function["Handler"] == HANDLER
    assert function["Runtime"] == "python3.12"
    assert (function["Timeout"], function["MemorySize"]) == (300, 1024)
    assert function["Environment"]["Variables"] == {"RUNENV_FUNCTION_TIMEOUT": "300"}
    digest = base64.b64encode(hashlib.sha256(build_package()).digest()).decode()
    assert function["CodeSha256"] == digest  # the package, as built here

    updated = runenv(
        "deploy", "lambda", "runenv-test", "--endpoint-url", moto, "--memory", "512",
        "--timeout", "60", "--alias", "live", env=aws,
    )  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    assert "updating runenv-test" in updated.stderr
    function = lam.get_function(FunctionName="runenv-test")["Configuration"]
    assert (function["Timeout"], function["MemorySize"]) == (60, 512)
    assert function["Environment"]["Variables"] == {"RUNENV_FUNCTION_TIMEOUT": "60"}
    alias = lam.get_alias(FunctionName="runenv-test", Name="live")
    assert alias["FunctionVersion"] == json.loads(updated.stdout)["version"]


def test_creating_without_a_role_is_a_clear_error(moto: str, aws: dict[str, str]) -> None:
    done = runenv("deploy", "lambda", "runenv-new", "--endpoint-url", moto, env=aws)
    assert done.returncode == 2
    assert "creating it needs an execution role (--role)" in done.stderr
    lam = boto3.client("lambda", endpoint_url=moto)
    names = [f["FunctionName"] for f in lam.list_functions()["Functions"]]
    assert "runenv-new" not in names


def test_bad_settings_are_refused_before_anything_is_sent(moto: str, aws: dict[str, str]) -> None:
    done = runenv("deploy", "lambda", "x", "--endpoint-url", moto, "--timeout", "901", env=aws)
    assert done.returncode == 2
    assert "1 to 900 seconds" in done.stderr
    done = runenv("deploy", "lambda", "x", "--profile", "no-such-profile", env=aws)
    assert done.returncode == 125
    assert "no-such-profile" in done.stderr


@pytest.mark.skipif(
    not (
        os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        and os.environ.get("RUNENV_TEST_GCP_PROJECT")
    ),
    reason="live test: needs GOOGLE_APPLICATION_CREDENTIALS and RUNENV_TEST_GCP_PROJECT (and"
    " RUNENV_TEST_GCP_REGION); this machine reaches no Google endpoint",
)
def test_live_deploy_to_cloud_functions() -> None:
    from run_environments.environments.serverless.deploy import deploy_cloud_function

    found = deploy_cloud_function(
        "runenv-test-executor",
        project=os.environ["RUNENV_TEST_GCP_PROJECT"],
        region=os.environ.get("RUNENV_TEST_GCP_REGION", "europe-west1"),
        timeout=60,
    )
    assert found["state"] == "ACTIVE"
    assert found["url"].startswith("https://")
