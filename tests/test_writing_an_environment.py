"""The example of docs/writing-an-environment.md is the code in examples/, and it passes the
shipped behaviour suite unchanged."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from run_environments import RunEnvironment
from run_environments.testing import EnvironmentBehaviour

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "examples"))

from nice_environment import NiceRunEnvironment  # noqa: E402


def test_the_page_shows_the_example_unchanged() -> None:
    page = (ROOT / "docs" / "writing-an-environment.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.DOTALL)
    assert blocks[0] == (ROOT / "examples" / "nice_environment.py").read_text()


class TestNice(EnvironmentBehaviour):
    @pytest.fixture
    async def env(self, tmp_path: Path) -> AsyncIterator[RunEnvironment]:
        self.tmp = tmp_path
        async with NiceRunEnvironment(tmp_dir=str(tmp_path)) as env:
            yield env

    async def leftovers(self, env: RunEnvironment) -> list[str]:
        assert isinstance(env, NiceRunEnvironment)
        return [*(str(p) for p in self.tmp.iterdir()), *["a run"] * env.running()]


async def test_programs_run_at_the_lowest_priority(tmp_path: Path) -> None:
    async with NiceRunEnvironment(tmp_dir=str(tmp_path)) as env:
        result = await env.execute("import os; print(os.nice(0))")
    assert result.stdout == "19\n"


test_programs_run_at_the_lowest_priority = pytest.mark.anyio(
    test_programs_run_at_the_lowest_priority
)
