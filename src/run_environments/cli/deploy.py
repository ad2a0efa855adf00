"""``runenv deploy``: the executor function, created or updated on AWS Lambda or Google
Cloud Functions."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from .._errors import AuthenticationError, InvalidOptionsError, RunEnvironmentError
from .common import CANNOT_RUN, Failure, err


@click.group()
def deploy() -> None:
    """Deploy the executor that the lambda and cloud-functions environments invoke."""


def _say(text: str) -> None:
    err.print(f"runenv: {text}")


def _deployed(work: Callable[[], dict[str, Any]]) -> None:
    try:
        found = work()
    except InvalidOptionsError as exc:
        raise Failure(str(exc)) from None
    except AuthenticationError as exc:
        raise Failure(str(exc), CANNOT_RUN, "unauthenticated") from None
    except RunEnvironmentError as exc:
        raise Failure(str(exc), CANNOT_RUN, "unavailable") from None
    click.echo(json.dumps(found, indent=2))


@deploy.command("lambda")
@click.argument("function", default="runenv-executor")
@click.option("--role", help="The execution role's ARN (needed to create the function).")
@click.option("--region", help="Default: the AWS configuration's.")
@click.option("--profile", help="A profile of the AWS configuration.")
@click.option("--endpoint-url", help="Another endpoint of the Lambda API.")
@click.option("--memory", type=int, default=1024, show_default=True, help="Megabytes.")
@click.option("--timeout", type=int, default=300, show_default=True, help="Seconds.")
@click.option("--alias", help="Point this alias at the new version too.")
def deploy_lambda(
    function: str,
    role: str | None,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
    memory: int,
    timeout: int,
    alias: str | None,
) -> None:
    """Create the Lambda function FUNCTION running the executor, or update its code and
    settings; prints its ARN and version.

    Use it with `runenv run -E lambda` and RUNENV_LAMBDA_FUNCTION=FUNCTION (or
    FUNCTION:ALIAS). The role needs no permission beyond writing logs: programs run with
    its credentials within reach.
    """
    from ..environments.serverless.deploy import deploy_lambda as work

    _deployed(
        lambda: work(
            function,
            role=role,
            region=region,
            profile=profile,
            endpoint_url=endpoint_url,
            memory=memory,
            timeout=timeout,
            alias=alias,
            progress=_say,
        )
    )


@deploy.command("cloud-functions")
@click.argument("name", default="runenv-executor")
@click.option("--project", required=True, help="The Google Cloud project.")
@click.option("--region", required=True, help="Such as europe-west1.")
@click.option("--memory", default="1Gi", show_default=True)
@click.option("--timeout", type=int, default=300, show_default=True, help="Seconds.")
def deploy_cloud_functions(project: str, region: str, name: str, memory: str, timeout: int) -> None:
    """Create the Cloud Function NAME (2nd gen, an HTTP function) running the executor, or
    update it, with Google's application default credentials; prints its URL.

    Use it with `runenv run -E cloud-functions` and RUNENV_CLOUD_FUNCTIONS_URL=URL.
    """
    from ..environments.serverless.deploy import deploy_cloud_function as work

    _deployed(
        lambda: work(
            name, project=project, region=region, memory=memory, timeout=timeout, progress=_say
        )
    )
