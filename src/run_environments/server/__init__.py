"""``runenv serve``: an HTTP execution service speaking the native, SandboxFusion and Piston
APIs."""

from .app import create_app, server_config
from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "server_config"]
