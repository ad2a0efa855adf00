"""``runenv doctor`` and ``runenv languages``: what can run here, as text or JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._errors import RunEnvironmentError
from .._languages import LANGUAGES
from .._registry import create_environment, environment_names
from ..environments.base import EnvironmentStatus
from ..profiles import PROFILES, installed
from .common import run_until_signalled, want_json_errors
from .run import DEFAULT_ENVIRONMENT

Statuses = list[tuple[str, EnvironmentStatus | str]]


async def _statuses() -> Statuses:
    """Each registered environment's status, or why it could not even be made."""
    return (await _survey(profile=False))[0]


async def _doctor() -> tuple[Statuses, dict[str, str | None] | None]:
    return await _survey(profile=True)


async def _survey(profile: bool) -> tuple[Statuses, dict[str, str | None] | None]:
    """Each environment's status; with ``profile``, also the datasets profile's libraries
    where the default environment runs code (None when it is not ready), asked of the
    same environment object, so that it is checked once."""
    found: Statuses = []
    libraries = None
    for name in environment_names():
        try:
            env = create_environment(name)
            async with env:
                status = await env.status()
                found.append((name, status))
                if profile and name == DEFAULT_ENVIRONMENT and status.ready:
                    libraries = await installed(env, "datasets")
        except RunEnvironmentError as exc:
            found.append((name, str(exc)))
    return found, libraries


def _as_data(name: str, status: EnvironmentStatus | str) -> dict[str, Any]:
    if isinstance(status, str):
        return {"name": name, "ready": False, "reason": status, "notes": [], "languages": []}
    return {
        "name": name,
        "ready": status.ready,
        "reason": status.reason,
        "notes": list(status.notes),
        "languages": [
            {
                "name": lang.name,
                "aliases": list(lang.aliases),
                "available": lang.available,
                "command": lang.command,
                "missing": lang.missing,
            }
            for lang in status.languages
        ],
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.pass_context
def languages(ctx: click.Context, as_json: bool) -> None:
    """List each language and whether each environment can run it."""
    want_json_errors(ctx, as_json)
    statuses = run_until_signalled(_statuses)
    if as_json:
        data = {"environments": [_as_data(n, s) for n, s in statuses]}
        data["languages"] = [
            {
                "name": lang.name,
                "aliases": list(lang.aliases),
                "suffixes": [lang.suffix, *lang.suffixes],
            }
            for lang in LANGUAGES
        ]
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(title="Languages")
    table.add_column("language")
    table.add_column("aliases")
    named = [(n, s) for n, s in statuses if isinstance(s, EnvironmentStatus) and s.languages]
    for name, _ in named:
        table.add_column(name)
    support = {(n, lang.name): lang.available for n, st in named for lang in st.languages}
    for language in LANGUAGES:
        marks = [
            "[green]yes[/green]" if support.get((name, language.name)) else "[red]no[/red]"
            for name, _ in named
        ]
        table.add_row(language.name, ", ".join(language.aliases), *marks)
    not_ready = [n for n, s in statuses if not (isinstance(s, EnvironmentStatus) and s.ready)]
    if not_ready:
        table.caption = f"not ready here: {', '.join(not_ready)} (see runenv doctor)"
    Console().print(table)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Say which environments are ready, and what to install for the others.

    Exits 0 when the default environment (the sandbox) is ready, else 1.
    """
    want_json_errors(ctx, as_json)
    statuses, profile = run_until_signalled(_doctor)
    default_ready = any(
        n == DEFAULT_ENVIRONMENT and isinstance(s, EnvironmentStatus) and s.ready
        for n, s in statuses
    )
    if as_json:
        data = {
            "default": DEFAULT_ENVIRONMENT,
            "default_ready": default_ready,
            "environments": [_as_data(n, s) for n, s in statuses],
            "profiles": {"datasets": profile} if profile is not None else {},
        }
        click.echo(json.dumps(data, indent=2))
        sys.exit(0 if default_ready else 1)
    console = Console(highlight=False)
    for name, status in statuses:
        if isinstance(status, str):
            console.print(f"[red]✗[/red] {name}: {escape(status)}")
            continue
        mark = "[green]✓[/green]" if status.ready else "[red]✗[/red]"
        console.print(
            f"{mark} {name}" + ("" if status.ready else f": {escape(status.reason or '')}")
        )
        for note in status.notes:
            console.print(f"    {escape(note)}")
        if status.ready:
            for lang in status.languages:
                if not lang.available:
                    console.print(f"    {lang.name}: {escape(lang.missing or '')}")
    if profile is not None:
        missing = [lib for lib in PROFILES["datasets"] if profile.get(lib.name) is None]
        have = len(profile) - len(missing)
        console.print(
            f"datasets profile ({DEFAULT_ENVIRONMENT}): {have} of {len(profile)} libraries"
        )
        for lib in missing:
            console.print(f"    {lib.name} ({lib.language}): apt-get install {lib.package}")
    if not default_ready:
        console.print(
            f"the default environment ({DEFAULT_ENVIRONMENT}) is not ready: `runenv run` runs "
            "nothing until it is, or until you choose another with -E"
        )
    sys.exit(0 if default_ready else 1)
