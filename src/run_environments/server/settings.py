"""Everything an operator tunes, read from flags and ``RUNENV_*`` variables in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from .._errors import InvalidOptionsError


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """How ``runenv serve`` runs.

    :param host: address to bind (loopback unless you mean otherwise).
    :param port: port to bind.
    :param environment: the environment requests run in unless they name another.
    :param allow_local: also offer the unisolated "local" environment.
    :param token: when set, every request but ``/healthz`` needs ``Authorization: Bearer``.
    :param max_concurrency: executions running at once.
    :param max_queue: executions waiting for a slot; past it, requests get 429.
    :param max_body_bytes: the largest request body; larger ones get 413.
    :param max_timeout: the longest ``timeout`` a request may ask for, in seconds.
    :param grace: seconds in-flight executions get to finish on SIGTERM.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    environment: str = "sandbox"
    allow_local: bool = False
    token: str | None = field(default=None, repr=False)
    max_concurrency: int = 8
    max_queue: int = 256
    max_body_bytes: int = 16 << 20
    max_timeout: float = 300.0
    grace: float = 10.0

    def __post_init__(self) -> None:
        if self.environment == "local" and not self.allow_local:
            raise InvalidOptionsError(
                "the local environment runs code unisolated: pass --allow-local to serve it"
            )
        for name in ("max_concurrency", "max_body_bytes", "port"):
            if getattr(self, name) < (0 if name == "port" else 1):
                raise InvalidOptionsError(f"{name} must be positive")
        if self.max_queue < 0 or self.max_timeout <= 0 or self.grace < 0:
            raise InvalidOptionsError("max_queue, max_timeout and grace must not be negative")

    @property
    def environments(self) -> tuple[str, ...]:
        """The environments requests may name."""
        names = [self.environment]
        if self.allow_local and "local" not in names:
            names.append("local")
        return tuple(names)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> ServerSettings:
        """Settings from ``RUNENV_<FIELD>`` variables, then ``overrides`` (None: unset)."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f"RUNENV_{f.name.upper()}")
            if raw is None:
                continue
            kind = type(getattr(cls(), f.name)) if f.name != "token" else str
            values[f.name] = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
