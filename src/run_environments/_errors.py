"""The exceptions of run-environments.

Everything the package raises derives from :class:`RunEnvironmentError`::

    RunEnvironmentError
     ├── InvalidOptionsError          a bad option or argument (also a ValueError)
     │    └── UnknownLanguageError    the language is not in the table
     ├── UnknownEnvironmentError      no environment is registered under that name
     ├── EnvironmentUnavailableError  the environment cannot run here (missing extra, tool, key)
     │    └── LanguageUnavailableError  the language is known but its tools are missing
     ├── SpawnError                   the operating system refused to start the program
     ├── ServiceError                 a remote service refused or failed a request
     │    ├── AuthenticationError     the credentials were missing or wrong
     │    ├── HostKeyError            an SSH server's host key is unknown or changed
     │    ├── PlatformTimeoutError    a serverless function was stopped by its platform's time limit
     │    ├── RateLimitError          too many requests: retry after ``retry_after`` seconds
     │    └── UnreachableError        the service could not be reached, or the connection dropped
     └── ExecutionFailed              raised by ``ExecutionResult.check()`` on a failed result

A user program that fails is not an exception: it is an :class:`ExecutionResult` whose
``success`` is false.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import ExecutionResult


class RunEnvironmentError(Exception):
    """The root of every exception raised by run-environments."""


class InvalidOptionsError(RunEnvironmentError, ValueError):
    """An option or argument is not acceptable."""


class UnknownLanguageError(InvalidOptionsError):
    """The requested language is not in the language table."""

    def __init__(self, language: str, supported: list[str]) -> None:
        self.language = language
        self.supported = supported
        super().__init__(
            f"unknown language {language!r}; supported languages: {', '.join(supported)}"
        )


class UnknownEnvironmentError(RunEnvironmentError, LookupError):
    """No run environment is registered under the requested name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown environment {name!r}; known environments: {', '.join(known)}")


class EnvironmentUnavailableError(RunEnvironmentError):
    """The environment cannot run here; the message says what is missing."""


class LanguageUnavailableError(EnvironmentUnavailableError):
    """The language is known, but the tools it needs are missing in this environment."""

    def __init__(self, language: str, environment: str, missing: str) -> None:
        self.language = language
        self.environment = environment
        self.missing = missing
        super().__init__(f"{language} cannot run in the {environment} environment: {missing}")


class SpawnError(RunEnvironmentError):
    """The operating system refused to start the program (for example, exec failed)."""


class ServiceError(RunEnvironmentError):
    """A remote service refused or failed a request; ``status`` is its HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class AuthenticationError(ServiceError):
    """The service wants credentials that were missing or wrong."""


class HostKeyError(ServiceError):
    """An SSH server's host key is not one the known hosts trust: unknown, or changed."""


class PlatformTimeoutError(ServiceError):
    """A serverless function was stopped by its platform's own time limit before it answered
    (the run's ``timeout`` is enforced inside the function, well before that limit)."""


class RateLimitError(ServiceError):
    """The service is overloaded or rate-limiting: retry after ``retry_after`` seconds."""

    def __init__(self, message: str, status: int | None = 429, retry_after: float = 1.0):
        self.retry_after = retry_after
        super().__init__(message, status)


class UnreachableError(ServiceError):
    """The service could not be reached, or the connection dropped mid-request."""


class ExecutionFailed(RunEnvironmentError):
    """Raised by :meth:`ExecutionResult.check` when the run did not succeed."""

    def __init__(self, result: ExecutionResult) -> None:
        self.result = result
        super().__init__(result.error or "execution failed")
