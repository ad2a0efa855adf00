"""Everything the package raises descends from RunEnvironmentError: a walk over every
``raise`` statement of every module proves it, but for the few named below."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import run_environments
from run_environments import RunEnvironmentError

OTHERS = {
    # exceptions that belong to a framework's protocol, raised to that framework
    ("run_environments", "AttributeError"): "the module attribute protocol (__getattr__)",
    ("run_environments", "ImportError"): "an import of a name whose extra is missing",
    ("run_environments.cli.common", "Failure"): "a ClickException: click exits with it",
    ("run_environments.cli.deploy", "Failure"): "a ClickException: click exits with it",
    ("run_environments.cli.images", "Failure"): "a ClickException: click exits with it",
    ("run_environments.cli.run", "Failure"): "a ClickException: click exits with it",
    ("run_environments.cli.serve", "Failure"): "a ClickException: click exits with it",
    ("run_environments.cli.sources", "Failure"): "a ClickException: click exits with it",
    ("run_environments.server.app", "HTTPException"): "FastAPI answers it (401)",
    ("run_environments.server.piston", "HTTPException"): "FastAPI answers it (415)",
    ("run_environments.server.e2b_envd", "ConnectError"): "connectrpc answers it",
    ("run_environments.server.sandboxfusion", "ValueError"): "pydantic turns it into a 422",
    ("run_environments.environments.e2b", "error"): "the caller's own callback exception",
    ("run_environments.environments.wasm.guest", "ValueError"): "inside Pyodide, to the guest"
    " (time.sleep's own error)",
    # raised and caught inside the package, never out of it
    ("run_environments._workspace", "OSError"): "callers translate it (describe())",
    ("run_environments._offload", "OverBudget"): "soon() catches it",
    ("run_environments.cli.common", "Stopped"): "run_until_signalled catches it",
    ("run_environments.environments.sandbox.mounts", "OSError"): "callers suppress it",
    ("run_environments.environments.sandbox.zygote", "OSError"): "inside the sandbox: the fork"
    " server reports it to the host as a message",
}


def raised_names(module: str) -> set[str]:
    """Names of the exception classes the module's ``raise`` statements make."""
    tree = ast.parse(Path(importlib.import_module(module).__file__ or "").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Attribute):
                names.add(target.attr)
            elif isinstance(target, ast.Name) and target.id[0].isupper():
                names.add(target.id)
    return names


def modules() -> list[str]:
    found = ["run_environments"]
    for info in pkgutil.walk_packages(run_environments.__path__, "run_environments."):
        if not info.name.endswith("__main__"):  # importing it runs the command
            found.append(info.name)
    return found


def test_every_raised_exception_descends_from_the_root() -> None:
    strays = []
    for module in modules():
        if module.startswith("run_environments.testing"):
            continue  # a test suite: its failed assertions are what it is for
        namespace = vars(importlib.import_module(module))
        for name in raised_names(module):
            if (module, name) in OTHERS:
                continue
            cls = namespace.get(name) or getattr(run_environments, name, None)
            if not (isinstance(cls, type) and issubclass(cls, RunEnvironmentError)):
                strays.append(f"{module}: raise {name}")
    assert strays == []


def test_the_walk_sees_every_module() -> None:
    found = modules()
    assert "run_environments.server.envd_session" in found
    assert "run_environments.environments.sandbox.environment" in found
    assert "InvalidOptionsError" in raised_names("run_environments._models")
