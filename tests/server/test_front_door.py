"""What a person meets first at a server: its docs page offline, one error shape, a token
that is checked by readiness too, and a server that does not need the E2B SDK."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from run_environments import AuthenticationError, RemoteRunEnvironment, RunEnvironment
from run_environments.server import ServerSettings

from .conftest import running

pytestmark = pytest.mark.anyio


def test_the_docs_page_needs_no_internet(http: httpx.Client) -> None:
    page = http.get("/docs")
    assert page.status_code == 200
    assert "/docs/assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    for asset, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "css")):
        served = http.get(f"/docs/assets/{asset}")
        assert served.status_code == 200 and kind in served.headers["content-type"]
        assert len(served.content) > 10_000
    assert http.get("/openapi.json").json()["info"]["title"] == "run-environments"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "kind"),
    [
        ("POST", "/v1/execute", {"code": 1}, 422, "ValidationError"),
        ("POST", "/v1/execute", {"code": "1", "language": "cobol"}, 422, "UnknownLanguageError"),
        ("POST", "/v1/execute", {"code": "1", "max_output_bytes": 0}, 422, "InvalidOptionsError"),
        ("GET", "/v1/nothing-here", None, 404, "HTTPError"),
        ("GET", "/v1/execute", None, 405, "HTTPError"),
    ],
)
def test_every_error_has_one_shape(
    http: httpx.Client, method: str, path: str, body: object, status: int, kind: str
) -> None:
    response = http.request(method, path, json=body)
    assert response.status_code == status
    data = response.json()
    assert set(data) == {"error"}
    assert data["error"]["type"] == kind and data["error"]["message"]


async def test_a_wrong_token_is_not_ready_and_says_so_plainly(
    server_envs: dict[str, RunEnvironment],
) -> None:
    with running(ServerSettings(token="t0ken"), {"sandbox": server_envs["sandbox"]}) as base:
        async with RemoteRunEnvironment(base, token="wrong") as env:
            assert not await env.is_ready()
            status = await env.status()
            assert status.reason == "a valid API token is required"
            with pytest.raises(AuthenticationError) as caught:
                await env.execute("print(1)")
            assert str(caught.value) == "a valid API token is required"  # not raw JSON
        async with RemoteRunEnvironment(base, token="t0ken") as env:
            assert await env.is_ready()


def test_the_server_runs_without_the_e2b_package() -> None:
    """``[server]`` does not pull the E2B SDK in: without it, the envd API is absent and
    everything else is served."""
    script = (
        "import sys\n"
        "sys.modules['e2b'] = None  # as if it were not installed\n"
        "from fastapi.testclient import TestClient\n"
        "from run_environments import LocalRunEnvironment\n"
        "from run_environments.server import ServerSettings, create_app\n"
        "app = create_app(ServerSettings(environment='local', allow_local=True),\n"
        "                 {'local': LocalRunEnvironment()})\n"
        "with TestClient(app) as client:\n"
        "    answer = client.post('/v1/execute', json={'code': 'print(6 * 7)'}).json()\n"
        "    print(answer['stdout'].strip())\n"
        "    print(client.get('/health').status_code)\n"
        "print('e2b' in sys.modules and sys.modules['e2b'] is not None)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=os.environ, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["42", "404", "False"]
