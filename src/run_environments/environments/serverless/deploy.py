"""Packaging and deploying the executor: one zip for both platforms (the package and its
run-time requirements, pure Python, plus Cloud Functions' ``main.py``), created or updated
as a Lambda function through boto3, or as a Cloud Function through google-cloud-functions."""

from __future__ import annotations

import importlib.metadata
import io
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..._errors import (
    AuthenticationError,
    EnvironmentUnavailableError,
    InvalidOptionsError,
    ServiceError,
)
from .executor import HANDLER

__all__ = [
    "CLOUD_FUNCTIONS_ENTRY",
    "CLOUD_FUNCTIONS_MAIN",
    "HANDLER",
    "build_package",
    "deploy_cloud_function",
    "deploy_lambda",
]

CLOUD_FUNCTIONS_ENTRY = "execute"
CLOUD_FUNCTIONS_MAIN = (
    '"""The run-environments executor, as a Cloud Functions HTTP function."""\n\n'
    "from run_environments.environments.serverless.executor import http as execute\n\n"
    '__all__ = ["execute"]\n'
)
LAMBDA_RUNTIME = "python3.12"
CLOUD_FUNCTIONS_RUNTIME = "python312"
_SKIP = re.compile(r"(^|/)(__pycache__|node_modules)(/|$)|\.pyc$")


def _requirements(name: str, seen: set[str]) -> None:
    """``name`` and what it requires at run time (not through extras), as installed."""
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        return
    seen.add(key)
    for line in importlib.metadata.requires(name) or ():
        if "extra ==" in line:
            continue
        required = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if required is None:
            continue
        try:
            importlib.metadata.distribution(required.group())
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement of another Python version than this one
        _requirements(required.group(), seen)


def _files() -> Iterator[tuple[str, Path]]:
    """(path in the zip, file) for the executor and everything it imports."""
    package = Path(__file__).resolve().parents[2]
    for path in sorted(package.rglob("*")):
        relative = f"{package.name}/{path.relative_to(package).as_posix()}"
        if path.is_file() and not _SKIP.search(relative):
            yield relative, path
    seen: set[str] = set()
    _requirements("anyio", seen)
    for name in sorted(seen):
        distribution = importlib.metadata.distribution(name)
        for file in distribution.files or ():
            text = file.as_posix()
            if text.startswith("..") or _SKIP.search(text) or text.endswith(".so"):
                continue
            located = Path(str(distribution.locate_file(file)))
            if located.is_file():
                yield text, located


def build_package() -> bytes:
    """The zip deployed to either platform (files in a fixed order with fixed times, so the
    same sources give the same bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        entries = [*_files(), ("main.py", None), ("requirements.txt", None)]
        for name, path in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            if path is not None:
                data = path.read_bytes()
            elif name == "main.py":
                data = CLOUD_FUNCTIONS_MAIN.encode()
            else:  # the requirements are in the zip already
                data = b"# everything the executor needs is in this package\n"
            archive.writestr(info, data)
    return buffer.getvalue()


def deploy_lambda(
    function: str,
    *,
    role: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    endpoint_url: str | None = None,
    memory: int = 1024,
    timeout: int = 300,
    alias: str | None = None,
    runtime: str = LAMBDA_RUNTIME,
    architecture: str = "x86_64",
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Create the executor's Lambda function, or update its code and settings.

    :param role: the execution role's ARN (needed to create; the function needs no
        permission beyond writing its logs: programs run with the role's credentials within
        reach, so give it none).
    :param alias: also point this alias at the new version.
    :returns: the function's name, ARN, version (and alias) as Lambda reports them.
    """
    try:
        import boto3
        import botocore.exceptions
    except ImportError as exc:
        raise EnvironmentUnavailableError(
            f"deploying to Lambda needs {exc.name}: pip install 'run-environments[aws]'"
        ) from None
    if not 1 <= timeout <= 900:
        raise InvalidOptionsError("a Lambda function's timeout is 1 to 900 seconds")
    if not 128 <= memory <= 10240:
        raise InvalidOptionsError("a Lambda function's memory is 128 to 10240 MB")
    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
        client = session.client("lambda", endpoint_url=endpoint_url)
    except botocore.exceptions.ProfileNotFound as exc:
        raise AuthenticationError(str(exc)) from None
    except botocore.exceptions.NoRegionError:
        raise InvalidOptionsError("no AWS region: give --region or set AWS_REGION") from None
    code = build_package()
    progress(f"packaged the executor: {len(code)} bytes")
    settings: dict[str, Any] = {
        "Runtime": runtime,
        "Handler": HANDLER,
        "Timeout": timeout,
        "MemorySize": memory,
        "Description": "run-environments executor",
        "Environment": {"Variables": {"RUNENV_FUNCTION_TIMEOUT": str(timeout)}},
    }
    try:
        try:
            client.get_function(FunctionName=function)
            exists = True
        except client.exceptions.ResourceNotFoundException:
            exists = False
        if exists:
            progress(f"updating {function}")
            client.update_function_code(FunctionName=function, ZipFile=code)
            client.get_waiter("function_updated_v2").wait(FunctionName=function)
            configuration = client.update_function_configuration(FunctionName=function, **settings)
            client.get_waiter("function_updated_v2").wait(FunctionName=function)
        else:
            if not role:
                raise InvalidOptionsError(
                    f"{function} does not exist yet: creating it needs an execution role (--role)"
                )
            progress(f"creating {function}")
            configuration = client.create_function(
                FunctionName=function,
                Role=role,
                Code={"ZipFile": code},
                Architectures=[architecture],
                **settings,
            )
            client.get_waiter("function_active_v2").wait(FunctionName=function)
        version = client.publish_version(
            FunctionName=function, CodeSha256=configuration["CodeSha256"]
        )["Version"]
        found: dict[str, Any] = {
            "function": configuration["FunctionName"],
            "arn": configuration["FunctionArn"],
            "version": version,
            "code_sha256": configuration["CodeSha256"],
        }
        if alias:
            try:
                client.update_alias(FunctionName=function, Name=alias, FunctionVersion=version)
            except client.exceptions.ResourceNotFoundException:
                client.create_alias(FunctionName=function, Name=alias, FunctionVersion=version)
            found["alias"] = alias
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        raise ServiceError(f"Lambda: {error.get('Code')}: {error.get('Message', exc)}") from None
    except (
        botocore.exceptions.NoCredentialsError,
        botocore.exceptions.PartialCredentialsError,
    ) as exc:
        raise AuthenticationError(f"Lambda: {exc}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise ServiceError(f"Lambda: {exc}") from None
    progress(f"{found['arn']} version {version}")
    return found


def deploy_cloud_function(
    name: str,
    *,
    project: str,
    region: str,
    memory: str = "1Gi",
    timeout: int = 300,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Create the executor's Cloud Function (2nd gen), or update it, with Google's
    credentials (``GOOGLE_APPLICATION_CREDENTIALS`` or ``gcloud auth application-default``).

    Callers need an identity token (the environment fetches one with google-auth) unless
    the function is made public (``gcloud functions add-invoker-policy-binding``).
    :returns: the function's name, URL and state.
    """
    try:
        import httpx
        from google.api_core import exceptions as google_exceptions
        from google.cloud import functions_v2
    except ImportError as exc:
        raise EnvironmentUnavailableError(
            f"deploying to Cloud Functions needs {exc.name}: pip install 'run-environments[gcp]'"
        ) from None
    if not 1 <= timeout <= 3600:
        raise InvalidOptionsError("a Cloud Function's timeout is 1 to 3600 seconds")
    client = functions_v2.FunctionServiceClient()
    parent = f"projects/{project}/locations/{region}"
    code = build_package()
    progress(f"packaged the executor: {len(code)} bytes")
    try:
        upload = client.generate_upload_url(request={"parent": parent})
        put = httpx.put(
            upload.upload_url,
            content=code,
            headers={"Content-Type": "application/zip"},
            timeout=300,
        )
        if put.status_code >= 300:
            raise ServiceError(f"uploading the source: HTTP {put.status_code}: {put.text[:300]}")
        function = functions_v2.Function(
            name=f"{parent}/functions/{name}",
            description="run-environments executor",
            build_config=functions_v2.BuildConfig(
                runtime=CLOUD_FUNCTIONS_RUNTIME,
                entry_point=CLOUD_FUNCTIONS_ENTRY,
                source=functions_v2.Source(storage_source=upload.storage_source),
            ),
            service_config=functions_v2.ServiceConfig(
                available_memory=memory,
                timeout_seconds=timeout,
                max_instance_request_concurrency=1,
                environment_variables={"RUNENV_FUNCTION_TIMEOUT": str(timeout)},
                all_traffic_on_latest_revision=True,
            ),
        )
        try:
            client.get_function(name=function.name)
            progress(f"updating {function.name}")
            operation = client.update_function(function=function)
        except google_exceptions.NotFound:
            progress(f"creating {function.name}")
            operation = client.create_function(parent=parent, function=function, function_id=name)
        deployed = operation.result(timeout=1800)  # type: ignore[no-untyped-call]
    except google_exceptions.GoogleAPIError as exc:
        raise ServiceError(f"Cloud Functions: {exc}") from None
    progress(f"{deployed.name} at {deployed.service_config.uri}")
    return {
        "function": deployed.name,
        "url": deployed.service_config.uri,
        "state": deployed.state.name,
    }
