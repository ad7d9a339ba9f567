"""The machine a benchmark page was measured on: its first lines."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path


def machine(packages: tuple[str, ...], *notes: str) -> list[str]:
    """CPU, memory, kernel, Python and these packages' versions, then the page's own notes, as list items."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "unknown CPU",
    )
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in packages)
    return [
        f"- {os.cpu_count()} CPUs ({cpu}), {memory_kib / 2**20:.0f} GiB RAM, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {versions}",
        *notes,
    ]


def targets_table(checks: Iterable[tuple[str, str, bool]]) -> list[str]:
    """A benchmark page's targets as Markdown lines: each target, what was measured, met or not."""
    return [
        "| target | measured | |",
        "|---|---|---|",
        *(f"| {target} | {value} | {'met' if ok else '**not met**'} |" for target, value, ok in checks),
    ]
