from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

pytest.register_assert_rewrite("tests.helpers", "tests.sandboxing")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


from tests.sandboxing import sandbox, shared_tmp  # noqa: E402, F401  (shared fixtures)


@pytest.fixture(autouse=True)
def _collect_garbage_in_the_test_that_made_it() -> Iterator[None]:
    """Unclosed files warn when collected; collect after each test, so that the warning
    (an error here) lands on the test that leaked, not on whichever test runs later."""
    yield
    gc.collect()
