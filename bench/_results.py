"""Writing figures into bench/RESULTS.md, one section per benchmark script."""

from __future__ import annotations

import platform
import re
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Each section is written by the script it names, measuring side by side in one run.\n"
)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def write_section(name: str, body: str) -> None:
    """Replace (or add) the section ``name`` of RESULTS.md with ``body``."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    stamp = time.strftime("%Y-%m-%d")
    machine = f"{platform.machine()}, Python {platform.python_version()}"
    section = (
        f"<!-- {name} -->\n## {name}\n\n_{stamp}, {machine}_\n\n{body.strip()}\n<!-- /{name} -->\n"
    )
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else f"{text}\n{section}"
    RESULTS.write_text(text)
