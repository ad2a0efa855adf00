"""What every router shares: the environments, admission control and the metrics."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated

import anyio
from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import Field

from .._errors import EnvironmentUnavailableError, InvalidOptionsError, UnknownEnvironmentError
from .._languages import get_language
from .._models import ExecutionOptions, ExecutionResult
from ..environments.base import RunEnvironment
from .admission import Admission
from .settings import ServerSettings

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""A duration a request gives: positive and finite."""


def service_of(request: Request) -> Service:
    """The service of the application ``request`` came to."""
    service: Service = request.app.state.service
    return service


class Metrics:
    """Prometheus metrics of one server (its own registry, so servers do not mix)."""

    def __init__(self, admission: Admission) -> None:
        self.registry = CollectorRegistry()
        self.executions = Counter(
            "runenv_executions",
            "Executions by outcome and language.",
            ["status", "language"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "runenv_execution_seconds",
            "Wall time of executions.",
            ["language"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.rejected = Counter(
            "runenv_rejected", "Requests refused for load.", registry=self.registry
        )
        queue = Gauge("runenv_queue_length", "Executions waiting.", registry=self.registry)
        queue.set_function(lambda: admission.waiting)
        running = Gauge("runenv_in_flight", "Executions running.", registry=self.registry)
        running.set_function(lambda: admission.running)

    def record(self, result: ExecutionResult | None, language: str, seconds: float) -> None:
        """Count one execution; only names of the language table become labels, so that
        invented names cannot grow the metrics without bound."""
        try:
            language = get_language(language).name
        except InvalidOptionsError:
            language = "unknown"
        if result is None:
            status = "error"
        elif result.timed_out:
            status = "timeout"
        else:
            status = "success" if result.success else "failure"
        self.executions.labels(status=status, language=language).inc()
        self.duration.labels(language=language).observe(seconds)


class ShuttingDown(EnvironmentUnavailableError):
    """The server is shutting down and its grace for runs under way is over."""


class Service:
    """Runs executions for the routers, within the server's limits."""

    def __init__(self, settings: ServerSettings, environments: Mapping[str, RunEnvironment]):
        self.settings = settings
        self.environments = dict(environments)
        self.admission = Admission(settings.max_concurrency, settings.max_queue)
        self.metrics = Metrics(self.admission)
        self._runs: set[anyio.CancelScope] = set()
        self._cut = False

    def environment(self, name: str | None) -> RunEnvironment:
        """The environment ``name`` (default: the server's), if this server offers it."""
        name = name or self.settings.environment
        if name not in self.environments:
            error = UnknownEnvironmentError(name, sorted(self.environments))
            if name == "local":
                error.args = (
                    "this server does not offer the local environment: it runs code "
                    "unisolated, so the server must be started with --allow-local "
                    f"(offered here: {', '.join(sorted(self.environments))})",
                )
            raise error
        return self.environments[name]

    def default_timeout(self, value: float) -> float:
        """A time limit the request did not give: the API's default, within the server's."""
        return min(value, self.settings.max_timeout)

    def check(self, options: ExecutionOptions) -> None:
        """Refuse options past the server's ceilings.

        :raises InvalidOptionsError: naming the option, the value and the ceiling.
        """
        settings = self.settings
        longest = max(options.timeout, options.compile_timeout)
        if longest > settings.max_timeout:
            raise InvalidOptionsError(
                f"timeouts may be at most {settings.max_timeout:g} s on this server"
            )
        if options.max_output_bytes > settings.max_output_bytes:
            raise InvalidOptionsError(
                f"max_output_bytes may be at most {settings.max_output_bytes} on this server, "
                f"not {options.max_output_bytes}"
            )
        for name, ceiling in (
            ("memory", settings.max_memory),
            ("disk", settings.max_disk),
            ("processes", settings.max_processes),
            ("open_files", settings.max_open_files),
            ("cpu_time", settings.max_cpu_time),
        ):
            value = getattr(options.limits, name)
            if value is not None and value > ceiling:
                raise InvalidOptionsError(
                    f"limits.{name} may be at most {ceiling:g} on this server, not {value:g}"
                )

    async def execute(
        self, code: str, options: ExecutionOptions, environment: str | None = None
    ) -> ExecutionResult:
        """Run ``code`` in a slot (waiting in the queue for one).

        :raises Overloaded: if the queue is full.
        """
        env = self.environment(environment)
        self.check(options)
        async with self.admission.slot():
            return await self.run(env, code, options)

    async def run(
        self, env: RunEnvironment, code: str, options: ExecutionOptions
    ) -> ExecutionResult:
        """Run ``code`` now (the caller holds a slot), recording metrics.

        :raises ShuttingDown: if the server's shutdown grace ended first.
        """
        start = time.perf_counter()
        result = None
        try:
            with anyio.CancelScope() as scope:
                self._runs.add(scope)
                if self._cut:
                    scope.cancel()
                result = await env.execute(code, options)
        finally:
            self._runs.discard(scope)
            self.metrics.record(result, options.language, time.perf_counter() - start)
        if result is None:
            raise ShuttingDown("the server shut down before the run ended; run it again")
        return result

    def cut_runs(self) -> None:
        """End every run under way (the shutdown grace is over): each answers
        :class:`ShuttingDown`, and so does any run that starts from now on."""
        self._cut = True
        for scope in list(self._runs):
            scope.cancel()

    async def cleanup(self) -> None:
        for env in self.environments.values():
            await env.cleanup()
