"""Property-based fuzzing of the OpenAPI schema over real HTTP: no input makes a 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from run_environments import LocalRunEnvironment
from run_environments.server import ServerSettings

from .conftest import running

# GET /api/v2/runtimes and /metrics take no input; /healthz neither.
FUZZED = ("/v1/execute", "/v1/execute/stream", "/v1/languages", "/run_code", "/api/v2/execute")


@pytest.fixture(scope="module")
def api_schema(workspaces) -> Iterator[schemathesis.BaseSchema]:
    # A short max_timeout keeps generated programs quick; the local environment keeps the
    # fuzzer fast (validation is the same; the sandbox's own behaviour is tested elsewhere).
    env = LocalRunEnvironment(tmp_dir=str(workspaces), inherit_env=False)
    server = ServerSettings(environment="local", allow_local=True, max_timeout=2)
    with running(server, {"local": env}) as base:
        yield schemathesis.openapi.from_url(f"{base}/openapi.json")


@pytest.mark.parametrize("path", FUZZED)
def test_no_server_errors(api_schema: schemathesis.BaseSchema, path: str) -> None:
    operations = [
        result.ok() for result in api_schema.get_all_operations() if result.ok().path == path
    ]
    assert operations, f"{path} is not in the OpenAPI document"
    statuses: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(timeout=30)
            statuses.append(response.status_code)
            case.validate_response(response, checks=[not_a_server_error])

        fuzz()
    assert 200 in statuses, f"no generated request was accepted: {sorted(set(statuses))}"
