from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.behaviour.suite", "tests.helpers")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


from tests.sandboxing import sandbox, shared_tmp  # noqa: E402, F401  (shared fixtures)
