"""The remote environment: code runs on a ``runenv serve`` elsewhere, over its native API."""

from __future__ import annotations

import os
from typing import Any

from .._errors import RunEnvironmentError
from .._models import ExecutionOptions, ExecutionResult
from ..client import Client
from .base import EnvironmentStatus, LanguageSupport, RunEnvironment


class RemoteRunEnvironment(RunEnvironment):
    """Runs code on a remote server, so that one server can serve many machines.

    :param url: the server (default: ``$RUNENV_URL``, else http://127.0.0.1:8000).
    :param token: its API token (default: ``$RUNENV_TOKEN``).
    :param environment: which of the server's environments to use (default: the server's).
    """

    name = "remote"

    def __init__(
        self, url: str | None = None, *, token: str | None = None, environment: str | None = None
    ) -> None:
        self.url = url
        self.token = token
        self.environment = environment
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, token=self.token)
        return self._client

    async def execute(
        self, code: str, options: ExecutionOptions | None = None, **overrides: Any
    ) -> ExecutionResult:
        return await self.client.execute(code, options, environment=self.environment, **overrides)

    async def cleanup(self) -> None:
        """Close the connections; runs in flight are cancelled on the server."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def is_ready(self) -> bool:
        """Whether the server answers, accepts the token, and its environment is ready
        (false if any of these fails)."""
        return (await self.status()).ready

    async def status(self) -> EnvironmentStatus:
        try:
            data = await self.client.languages()
        except RunEnvironmentError as exc:
            reason = str(exc)
            if self.url is None and not os.environ.get("RUNENV_URL"):
                reason = (
                    "not configured (no URL given, $RUNENV_URL not set), and nothing answers "
                    f"at the default {self.client.url}"
                )
            return EnvironmentStatus(name=self.name, ready=False, reason=reason)
        name = self.environment or data["default"]
        env = data["environments"][name]
        return EnvironmentStatus(
            name=self.name,
            ready=env["ready"],
            reason=env["reason"],
            languages=tuple(
                LanguageSupport(
                    name=lang["name"],
                    aliases=tuple(lang["aliases"]),
                    available=lang["available"],
                    missing=lang["missing"],
                )
                for lang in env["languages"]
            ),
            notes=(f"{self.client.url} runs it in its {name} environment",),
        )
