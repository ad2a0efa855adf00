"""The sandbox environment and its parts: bubblewrap, cgroups and seccomp."""

from .environment import DEFAULT_LIMITS, SandboxRunEnvironment

__all__ = ["DEFAULT_LIMITS", "SandboxRunEnvironment"]
