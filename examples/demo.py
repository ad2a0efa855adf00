"""Run the basic examples in every environment that is ready on this machine.

python examples/demo.py
"""

from __future__ import annotations

import anyio
from rich.console import Console
from rich.table import Table

from run_environments import (
    ExecutionOptions,
    RunEnvironment,
    RunEnvironmentError,
    create_environment,
    environment_names,
)

EXAMPLES: list[tuple[str, str, ExecutionOptions]] = [
    ("python hello", "print('Hello from Python')", ExecutionOptions()),
    ("javascript", "console.log([1, 2, 3].map(x => x * 2))", ExecutionOptions(language="node")),
    (
        "typescript",
        "const greet = (n: string): string => `Hi ${n}`;\nconsole.log(greet('TS'));",
        ExecutionOptions(language="typescript"),
    ),
    ("bash + env", 'echo "user=$WHO"', ExecutionOptions(language="bash", env={"WHO": "demo"})),
    ("ruby", "puts [3, 1, 2].sort.inspect", ExecutionOptions(language="ruby")),
    ("stdin", "print(sum(map(int, input().split())))", ExecutionOptions(stdin="20 22\n")),
    (
        "c (compiled)",
        '#include <stdio.h>\nint main(){printf("%d\\n", 6*7);}',
        ExecutionOptions(language="c"),
    ),
    (
        "timeout",
        "import time\nprint('working', flush=True)\ntime.sleep(10)",
        ExecutionOptions(timeout=1),
    ),
    ("failure", "raise SystemExit('bad input')", ExecutionOptions()),
]


async def demo(env: RunEnvironment, console: Console) -> None:
    table = Table(title=f"environment: {env.name}")
    for column in ("example", "success", "stdout", "error", "ms"):
        table.add_column(column)
    for title, code, options in EXAMPLES:
        result = await env.execute(code, options)
        table.add_row(
            title,
            "yes" if result.success else "no",
            result.stdout.strip(),
            result.error or "",
            f"{result.execution_time * 1000:.0f}",
        )
    console.print(table)


async def main() -> None:
    console = Console()
    for name in environment_names():
        try:
            env = create_environment(name)
        except RunEnvironmentError as exc:
            console.print(f"[yellow]{name}: skipped ({exc})[/yellow]")
            continue
        async with env:
            status = await env.status()
            if not status.ready:
                console.print(f"[yellow]{name}: not ready ({status.reason})[/yellow]")
                continue
            try:
                await demo(env, console)
            except RunEnvironmentError as exc:
                console.print(f"[red]{name}: {exc}[/red]")


if __name__ == "__main__":
    anyio.run(main)
