"""Environment names -> classes, through the ``run_environments.environments`` entry points.

Third-party packages add environments by declaring an entry point in that group; the
built-in ones are declared the same way in this project's own metadata.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ._errors import EnvironmentUnavailableError, UnknownEnvironmentError
from .environments.base import RunEnvironment

GROUP = "run_environments.environments"

_EXTRAS = {
    "e2b": "e2b",
    "docker": "docker",
    "ssh": "ssh",
    "ray": "ray",
    "remote": "remote",
    "lambda": "aws",
    "cloud-functions": "gcp",
}
"""Built-in environments whose dependencies come with an extra of this distribution."""


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def environment_names() -> list[str]:
    """The names of all registered environments, sorted."""
    return sorted(_entry_points())


def get_environment_class(name: str) -> type[RunEnvironment]:
    """The environment class registered as ``name``.

    :raises UnknownEnvironmentError: if no environment has that name.
    :raises EnvironmentUnavailableError: if its dependencies are not installed.
    """
    points = _entry_points()
    if name not in points:
        raise UnknownEnvironmentError(name, sorted(points))
    try:
        cls = points[name].load()
    except ImportError as exc:
        extra = _EXTRAS.get(name)
        hint = f"pip install 'run-environments[{extra}]'" if extra else "install its package"
        raise EnvironmentUnavailableError(
            f"the {name} environment needs {exc.name or 'a missing module'}: {hint}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, RunEnvironment)):
        raise EnvironmentUnavailableError(
            f"entry point {name!r} does not name a RunEnvironment subclass"
        )
    return cls


def create_environment(name: str, **kwargs: Any) -> RunEnvironment:
    """Create the environment registered as ``name`` with ``kwargs``."""
    return get_environment_class(name)(**kwargs)
