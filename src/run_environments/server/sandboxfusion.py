"""SandboxFusion's ``POST /run_code``, the API RL frameworks (veRL and others) call.

Timeouts are seconds; a stage is ``Finished``, ``TimeLimitExceeded`` or ``Error``; the
response's ``status`` is ``Success``, ``Failed`` or ``SandboxError`` by SandboxFusion's rules,
always with HTTP 200 for a well-formed request.
"""

from __future__ import annotations

import base64
import binascii
import signal
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, field_validator

from .._errors import EnvironmentUnavailableError, InvalidOptionsError, SpawnError
from .._models import CompileResult, ExecutionOptions, ExecutionResult, Limits
from .service import Seconds, service_of

router = APIRouter(tags=["SandboxFusion"])

LANGUAGES: dict[str, str | None] = {
    "python": "python", "nodejs": "javascript", "typescript": "typescript", "bash": "bash",
    "ruby": "ruby", "cpp": "cpp", "go": "go", "java": "java", "rust": "rust", "php": "php",
    "perl": "perl", "lua": "lua", "csharp": "csharp", "R": "r", "racket": "racket",
    "scala": "scala", "sql": "sql", "kotlin_script": "kotlin-script",
    # its test-runner languages: a file of tests, judged by the runner's exit status
    "pytest": "pytest", "go_test": "go-test", "junit": "junit", "jest": "jest",
    "D_ut": "d-unittest",
    # SandboxFusion languages this server has no runner for (Debian packages none of them,
    # or, for gtest and react, their harness is SandboxFusion's own)
    "cuda": None, "julia": None, "verilog": None, "python_gpu": None, "lean": None,
    "swift": None, "python2": None, "gtest": None, "react": None,
}  # fmt: skip


class RunCodeRequest(BaseModel):
    code: str
    language: str = Field(json_schema_extra={"enum": list(LANGUAGES)})
    compile_timeout: Seconds | None = Field(None, description="default 10, within the server's")
    run_timeout: Seconds | None = Field(None, description="default 10, within the server's")
    memory_limit_MB: int = -1
    stdin: str | None = None
    files: dict[str, str | None] = {}
    fetch_files: list[str] = []

    @field_validator("language")
    @classmethod
    def known(cls, value: str) -> str:
        if value not in LANGUAGES:
            raise ValueError(
                f"unknown language {value!r}; SandboxFusion's are {', '.join(LANGUAGES)}"
            )
        return value


class StageResult(BaseModel):
    status: Literal["Finished", "Error", "TimeLimitExceeded"]
    execution_time: float | None = None
    return_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None
    cpu_time: float | None = None


class RunCodeResponse(BaseModel):
    status: Literal["Success", "Failed", "SandboxError"]
    message: str
    compile_result: StageResult | None = None
    run_result: StageResult | None = None
    executor_pod_name: str | None = None
    files: dict[str, str] = {}


def _stage(result: CompileResult | ExecutionResult) -> StageResult:
    code = result.exit_code
    if code is None and result.signal is not None:
        code = -signal.Signals[result.signal].value  # as Python's subprocess reports it
    return StageResult(
        status="TimeLimitExceeded" if result.timed_out else "Finished",
        execution_time=result.execution_time,
        return_code=code,
        stdout=result.stdout,
        stderr=result.stderr,
        cpu_time=result.cpu_time,
    )


def _failed(stage: StageResult | None) -> bool:
    return stage is not None and (
        stage.status == "TimeLimitExceeded" or (stage.return_code or 0) != 0
    )


def _files(files: dict[str, str | None]) -> dict[str, str | bytes]:
    decoded: dict[str, str | bytes] = {}
    for path, content in files.items():
        try:
            decoded[path] = base64.b64decode(content or "", validate=True)
        except (binascii.Error, ValueError):
            raise InvalidOptionsError(f"file {path!r} is not valid base64") from None
    return decoded


@router.post("/run_code", response_model=RunCodeResponse)
async def run_code(body: RunCodeRequest, request: Request) -> RunCodeResponse:
    """Run code the way SandboxFusion does; errors of the sandbox itself are
    ``SandboxError`` results, as its clients expect."""
    language = LANGUAGES[body.language]
    if language is None:
        return RunCodeResponse(
            status="SandboxError", message=f"{body.language} is not supported by this server"
        )
    memory = body.memory_limit_MB << 20 if body.memory_limit_MB > 0 else None
    service = service_of(request)
    options = ExecutionOptions(
        language=language,
        timeout=body.run_timeout or service.default_timeout(10),
        compile_timeout=body.compile_timeout or service.default_timeout(10),
        stdin=body.stdin,
        files=_files(body.files),
        fetch_files=body.fetch_files,
        limits=Limits(memory=memory),
    )
    try:
        result = await service.execute(body.code, options)
    except (EnvironmentUnavailableError, SpawnError) as exc:
        return RunCodeResponse(status="SandboxError", message=str(exc))
    compiled = _stage(result.compile) if result.compile is not None else None
    ran = None if result.compile is not None and not result.compile.success else _stage(result)
    failed = _failed(compiled) or _failed(ran)
    return RunCodeResponse(
        status="Failed" if failed else "Success",
        message="" if result.success else result.error or "",
        compile_result=compiled,
        run_result=ran,
        files={path: base64.b64encode(data).decode() for path, data in result.files.items()},
    )
