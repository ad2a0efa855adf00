"""Run code snippets in interchangeable run environments behind one interface."""

from __future__ import annotations

import importlib as _importlib

from ._detect import language_for_path
from ._errors import (
    AuthenticationError,
    EnvironmentUnavailableError,
    ExecutionFailed,
    HostKeyError,
    InvalidOptionsError,
    LanguageUnavailableError,
    PlatformTimeoutError,
    RateLimitError,
    RunEnvironmentError,
    ServiceError,
    SpawnError,
    UnknownEnvironmentError,
    UnknownLanguageError,
    UnreachableError,
)
from ._languages import LANGUAGES, Language, get_language, language_names
from ._live import LiveInput
from ._models import CompileResult, ExecutionOptions, ExecutionResult, Limits, RawOutput
from ._process import Outcome
from ._registry import create_environment, environment_names, get_environment_class
from ._sync import SyncRunEnvironment
from .environments.base import (
    CommandRunEnvironment,
    EnvironmentStatus,
    LanguageSupport,
    RunEnvironment,
)
from .environments.local import LocalRunEnvironment
from .environments.sandbox import SandboxRunEnvironment
from .environments.workspace import HostWorkspace, Workspace

__all__ = [  # noqa: RUF022 (plain sorted order)
    "AuthenticationError",
    "CommandRunEnvironment",
    "CompileResult",
    "EnvironmentStatus",
    "EnvironmentUnavailableError",
    "ExecutionFailed",
    "ExecutionOptions",
    "ExecutionResult",
    "HostKeyError",
    "HostWorkspace",
    "InvalidOptionsError",
    "LANGUAGES",
    "Language",
    "LanguageSupport",
    "LanguageUnavailableError",
    "Limits",
    "LiveInput",
    "LocalRunEnvironment",
    "Outcome",
    "PlatformTimeoutError",
    "RateLimitError",
    "RawOutput",
    "RemoteRunEnvironment",
    "RunEnvironment",
    "RunEnvironmentError",
    "SandboxRunEnvironment",
    "ServiceError",
    "SpawnError",
    "SyncRunEnvironment",
    "UnknownEnvironmentError",
    "UnknownLanguageError",
    "UnreachableError",
    "Workspace",
    "create_environment",
    "environment_names",
    "get_environment_class",
    "get_language",
    "language_for_path",
    "language_names",
]

_LAZY = {"RemoteRunEnvironment": ("run_environments.environments.remote", "remote")}
"""Names whose modules need an extra; imported on first use."""


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'run_environments' has no attribute {name!r}")
    module, extra = _LAZY[name]
    try:
        value = getattr(_importlib.import_module(module), name)
    except ImportError as exc:
        raise ImportError(
            f"{name} needs {exc.name}: pip install 'run-environments[{extra}]'"
        ) from exc
    globals()[name] = value
    return value
