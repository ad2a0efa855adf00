"""The sandbox environment and its parts: bubblewrap, cgroups and seccomp."""

from .environment import SandboxRunEnvironment
from .outcomes import DEFAULT_LIMITS

__all__ = ["DEFAULT_LIMITS", "SandboxRunEnvironment"]
