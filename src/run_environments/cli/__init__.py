"""``runenv``: run code from the command line in any run environment, report what can run
here, and serve it over HTTP (see :mod:`.common` for exit statuses)."""

from __future__ import annotations

import click

from .deploy import deploy
from .images import images
from .info import doctor, languages
from .run import DEFAULT_ENVIRONMENT, exit_status, run
from .serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="run-environments")
def main() -> None:
    """Run code snippets in interchangeable run environments.

    Code runs in the sandbox unless you choose another environment (-E); `runenv doctor`
    says what is ready here.
    """


main.add_command(run)
main.add_command(languages)
main.add_command(doctor)
main.add_command(serve)
main.add_command(images)
main.add_command(deploy)

__all__ = ["DEFAULT_ENVIRONMENT", "exit_status", "main"]
