"""Run code snippets in interchangeable run environments behind one interface."""

from __future__ import annotations

from ._errors import (
    EnvironmentUnavailableError,
    ExecutionFailed,
    InvalidOptionsError,
    LanguageUnavailableError,
    RunEnvironmentError,
    SpawnError,
    UnknownEnvironmentError,
    UnknownLanguageError,
)
from ._languages import LANGUAGES, Language, get_language, language_for_path, language_names
from ._models import CompileResult, ExecutionOptions, ExecutionResult, Limits
from ._registry import create_environment, environment_names, get_environment_class
from ._sync import SyncRunEnvironment
from .environments.base import EnvironmentStatus, LanguageSupport, RunEnvironment
from .environments.local import LocalRunEnvironment
from .environments.sandbox import SandboxRunEnvironment

__all__ = [  # noqa: RUF022 (plain sorted order)
    "CompileResult",
    "EnvironmentStatus",
    "EnvironmentUnavailableError",
    "ExecutionFailed",
    "ExecutionOptions",
    "ExecutionResult",
    "InvalidOptionsError",
    "LANGUAGES",
    "Language",
    "LanguageSupport",
    "LanguageUnavailableError",
    "Limits",
    "LocalRunEnvironment",
    "RunEnvironment",
    "RunEnvironmentError",
    "SandboxRunEnvironment",
    "SpawnError",
    "SyncRunEnvironment",
    "UnknownEnvironmentError",
    "UnknownLanguageError",
    "create_environment",
    "environment_names",
    "get_environment_class",
    "get_language",
    "language_for_path",
    "language_names",
]
