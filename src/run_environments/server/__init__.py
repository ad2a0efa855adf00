"""``runenv serve``: an HTTP execution service speaking the native, SandboxFusion, Piston
and E2B envd APIs."""

from .app import GracefulServer, create_app, server_config
from .settings import ServerSettings

__all__ = ["GracefulServer", "ServerSettings", "create_app", "server_config"]
