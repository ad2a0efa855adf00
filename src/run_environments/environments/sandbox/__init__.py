"""The sandbox environment and its parts: bubblewrap, cgroups and seccomp."""

from .environment import HeldSandbox, SandboxRunEnvironment
from .launcher import LongLived
from .outcomes import DEFAULT_LIMITS

__all__ = ["DEFAULT_LIMITS", "HeldSandbox", "LongLived", "SandboxRunEnvironment"]
