"""The behaviour every run environment shares, as a test suite any environment can run.

Subclass :class:`EnvironmentBehaviour` in a pytest module of your own, give it an ``env``
fixture that yields your environment and a :meth:`~EnvironmentBehaviour.leftovers` that says
what the environment left running or stored::

    from run_environments.testing import EnvironmentBehaviour

    class TestMine(EnvironmentBehaviour):
        @pytest.fixture
        async def env(self):
            async with MyRunEnvironment() as env:
                yield env

        async def leftovers(self, env):
            return []  # what is still running or stored, by name

The suite needs ``pytest`` and AnyIO's pytest plugin (``pip install
'run-environments[testing]'``); it runs on asyncio.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("run_environments.testing.suite")

from .samples import program  # noqa: E402
from .suite import EnvironmentBehaviour  # noqa: E402  (after the rewrite is registered)

__all__ = ["EnvironmentBehaviour", "program"]
