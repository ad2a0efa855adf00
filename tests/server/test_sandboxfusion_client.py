"""SandboxFusion's own client package, unchanged, against this server."""

from __future__ import annotations

import pytest
import sandbox_fusion
from sandbox_fusion import RunCodeRequest, RunStatus

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
