"""Everything an operator tunes, read from flags and ``RUNENV_*`` variables in one place."""

from __future__ import annotations

import ipaddress
import math
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
    :param max_timeout: the longest ``timeout`` a request may ask for, in seconds; also the
        longest an E2B-API command may run.
    :param max_memory: the most ``limits.memory`` a request may ask for, in bytes.
    :param max_disk: the most ``limits.disk``, in bytes.
    :param max_processes: the most ``limits.processes``.
    :param max_open_files: the most ``limits.open_files``.
    :param max_cpu_time: the most ``limits.cpu_time``, in seconds.
    :param max_output_bytes: the most ``max_output_bytes`` (of each of stdout and stderr).
    :param max_pending_bytes: request bytes all requests in progress may hold together;
        past it, requests get 503.
    :param header_timeout: seconds a connection has to send a request's headers.
    :param body_timeout: seconds a request has to send its whole body (then 408).
    :param max_connections: connections open at once; more are closed at once.
    :param max_sessions: E2B-API sessions (one per client identity) at once.
    :param session_quota: bytes of files one E2B-API session may keep (as root).
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
    max_memory: int = 4 << 30
    max_disk: int = 1 << 30
    max_processes: int = 1024
    max_open_files: int = 4096
    max_cpu_time: float = 300.0
    max_output_bytes: int = 64 << 20
    max_pending_bytes: int = 128 << 20
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 512
    max_sessions: int = 16
    session_quota: int = 1 << 30
    grace: float = 10.0

    def __post_init__(self) -> None:
        if self.environment == "local" and not self.allow_local:
            raise InvalidOptionsError(
                "the local environment runs code unisolated: pass --allow-local to serve it"
            )
        if self.token is not None and not self.token.strip():
            raise InvalidOptionsError(
                "the API token is empty: give a token, or none at all to serve without one"
            )
        positive = (
            "max_concurrency", "max_body_bytes", "max_timeout", "max_memory", "max_disk",
            "max_processes", "max_open_files", "max_cpu_time", "max_output_bytes",
            "max_pending_bytes", "header_timeout", "body_timeout", "max_connections",
            "max_sessions", "session_quota",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise InvalidOptionsError(f"{name} must be a positive number, not {value!r}")
        if self.max_pending_bytes < self.max_body_bytes:
            raise InvalidOptionsError("max_pending_bytes must hold at least one largest body")
        if not 0 <= self.port < 65536:
            raise InvalidOptionsError(f"port must be 0..65535, not {self.port}")
        if self.max_queue < 0 or self.grace < 0:
            raise InvalidOptionsError("max_queue and grace must not be negative")

    @property
    def loopback(self) -> bool:
        """Whether the server binds only this machine's loopback addresses."""
        host = self.host.strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

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
            try:
                values[f.name] = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
            except ValueError:
                raise InvalidOptionsError(
                    f"RUNENV_{f.name.upper()}={raw!r} is not a valid {kind.__name__}"
                ) from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
