"""SandboxFusion's own client package, unchanged, against this server."""

from __future__ import annotations

import pytest
import sandbox_fusion
from sandbox_fusion import RunCodeRequest, RunStatus

from run_environments.testing.samples import RUNNERS

# The client calls pydantic's deprecated .dict(); that is its business, not ours.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.anyio]


def test_run_code(url: str) -> None:
    response = sandbox_fusion.run_code(
        RunCodeRequest(code="print(input()[::-1])", language="python", stdin="abc"),
        endpoint=url,
    )
    assert response.status == RunStatus.Success
    assert response.run_result.stdout == "cba\n" and response.run_result.return_code == 0


def test_failed_compile_and_time_limit(url: str) -> None:
    broken = sandbox_fusion.run_code(
        RunCodeRequest(code="int main() { return x; }", language="cpp"), endpoint=url
    )
    assert broken.status == RunStatus.Failed and broken.run_result is None
    assert "x" in broken.compile_result.stderr
    slow = sandbox_fusion.run_code(
        RunCodeRequest(code="while True: pass", language="python", run_timeout=0.5),
        endpoint=url,
    )
    assert slow.status == RunStatus.Failed
    assert slow.run_result.status.value == "TimeLimitExceeded"


async def test_async_client(url: str) -> None:
    response = await sandbox_fusion.run_code_async(
        RunCodeRequest(code="console.log(1 + 1)", language="nodejs"), endpoint=url
    )
    assert response.status == RunStatus.Success and response.run_result.stdout == "2\n"


def test_files_in_tmp_through_the_client(url: str) -> None:
    import base64

    response = sandbox_fusion.run_code(
        RunCodeRequest(
            code="print(open('/tmp/data.txt').read()[::-1])\nopen('/tmp/out.txt', 'w').write('x')",
            language="python",
            files={"/tmp/data.txt": base64.b64encode(b"abc").decode()},
            fetch_files=["/tmp/out.txt"],
        ),
        endpoint=url,
    )
    assert response.status == RunStatus.Success, response
    assert response.run_result.stdout == "cba\n"
    assert base64.b64decode(response.files["/tmp/out.txt"]) == b"x"


# SandboxFusion's test-runner languages: its name, ours, and how the failing test is fixed
FIXES = {
    "pytest": ("pytest", "add(1, 1) == 3", "add(1, 1) == 2"),
    "go_test": ("go-test", "add(1, 1) != 3", "add(1, 1) != 2"),
    "junit": ("junit", "assertEquals(3,", "assertEquals(2,"),
    "jest": ("jest", "toBe(3)", "toBe(2)"),
    "D_ut": ("d-unittest", "add(1, 1) == 3", "add(1, 1) == 2"),
}


@pytest.mark.parametrize("language", sorted(FIXES))
def test_a_test_runner_language_is_judged_by_its_tests(url: str, language: str) -> None:
    ours, wrong, right = FIXES[language]
    code, failing, _ = RUNNERS[ours]
    assert wrong in code
    failed = sandbox_fusion.run_code(
        RunCodeRequest(code=code, language=language, run_timeout=60, compile_timeout=60),
        endpoint=url,
    )
    assert failed.status == RunStatus.Failed, failed
    assert failed.run_result.return_code == 1
    assert failing in failed.run_result.stdout + failed.run_result.stderr
    passed = sandbox_fusion.run_code(
        RunCodeRequest(
            code=code.replace(wrong, right), language=language, run_timeout=60, compile_timeout=60
        ),
        endpoint=url,
    )
    assert passed.status == RunStatus.Success, passed
    assert passed.run_result.return_code == 0


@pytest.mark.parametrize(
    ("language", "code", "stdout"),
    [
        ("sql", "CREATE TABLE t(x);\nINSERT INTO t VALUES (2), (3);\nSELECT sum(x) FROM t;", "5\n"),
        ("kotlin_script", "println(listOf(2, 3).sum())", "5\n"),
    ],
)
def test_sql_and_kotlin_scripts(url: str, language: str, code: str, stdout: str) -> None:
    response = sandbox_fusion.run_code(
        RunCodeRequest(code=code, language=language, run_timeout=60), endpoint=url
    )
    assert response.status == RunStatus.Success, response
    assert response.run_result.stdout == stdout
