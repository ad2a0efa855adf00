"""The serverless environments' cost per run, side by side and alternating, against the
vendors' local runtimes started here (the tests' helpers): AWS's Lambda Runtime Interface
Emulator running the executor through awslambdaric, and Google's functions-framework.

- local: ``LocalRunEnvironment().execute("pass")``, what the executor does inside;
- lambda (emulator): ``LambdaRunEnvironment`` through boto3 to the emulator: the invoke,
  the runtime's hand-over, the executor, the result back;
- lambda invoke, empty handler: boto3 to the emulator running a handler that returns at
  once: the platform's part alone;
- cloud-functions (framework): ``CloudFunctionsRunEnvironment`` over HTTP to the framework.

A deployed function adds the network's round trip and, on a cold instance, its start.
Writes the "serverless" section of bench/RESULTS.md.

    python bench/bench_serverless.py [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import anyio
import boto3

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.serverless import functions_framework, lambda_emulator

from _results import median_ms, write_section
from run_environments import LocalRunEnvironment, RunEnvironment
from run_environments.environments.serverless.aws_lambda import LambdaRunEnvironment
from run_environments.environments.serverless.gcf import CloudFunctionsRunEnvironment

CREDENTIALS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}


async def measure(lambda_url: str, empty_url: str, gcf_url: str, runs: int) -> dict[str, float]:
    empty = boto3.client("lambda", endpoint_url=empty_url, region_name="us-east-1", **CREDENTIALS)

    async def invoke_empty() -> None:
        response = await anyio.to_thread.run_sync(
            lambda: empty.invoke(FunctionName="function", Payload=b"{}")
        )
        assert json.loads(response["Payload"].read()) == {}

    samples: dict[str, list[float]] = {}
    async with (
        LocalRunEnvironment() as local,
        LambdaRunEnvironment(
            "function", endpoint_url=lambda_url, region="us-east-1", max_concurrency=1,
            **CREDENTIALS,
        ) as aws,
        CloudFunctionsRunEnvironment(gcf_url, auth=False) as gcf,
    ):  # fmt: skip
        envs: dict[str, RunEnvironment] = {
            "local": local,
            "lambda (emulator)": aws,
            "cloud-functions (framework)": gcf,
        }
        for env in envs.values():  # warm: the first invoke starts the runtime
            assert (await env.execute("pass")).success
        await invoke_empty()
        for _ in range(runs):
            for name, env in envs.items():
                start = time.perf_counter()
                result = await env.execute("pass")
                samples.setdefault(name, []).append(time.perf_counter() - start)
                assert result.success, result
            start = time.perf_counter()
            await invoke_empty()
            samples.setdefault("lambda invoke, empty handler", []).append(
                time.perf_counter() - start
            )
    return {name: median_ms(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for name in ("rie", "empty", "gcf", "work"):
            (base / name).mkdir()
        (base / "empty" / "empty.py").write_text("def handler(event, context):\n    return {}\n")
        with (
            lambda_emulator(base / "rie", base / "work") as lambda_url,
            lambda_emulator(base / "empty", base / "work", handler="empty.handler") as empty_url,
            functions_framework(base / "gcf", base / "work") as gcf_url,
        ):
            figures = anyio.run(measure, lambda_url, empty_url, gcf_url, runs)
    local = figures["local"]
    rows = [f"| {name} | {ms:.1f} | {ms / local:.2f}x |" for name, ms in figures.items()]
    body = (
        f'`execute("pass")` in Python, median of {runs} alternating runs, ms; the ratio is to'
        " the local environment.\n\n| | ms | vs local |\n|---|---:|---:|\n" + "\n".join(rows)
    )
    body += (
        "\n\nThe serverless figures are the overhead of an invoke on this machine; a deployed"
        " function adds the network's round trip and, when its instance is cold, its start."
    )
    print(body)
    write_section("serverless", body)


if __name__ == "__main__":
    main()
