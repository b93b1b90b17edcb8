"""A benchmark's current table, stamped with what it was measured on, for the performance page.

A benchmark's numbers depend on the CPU, the thread count, torch and the code, so each table file says all
four: docs/bench/NAME.md is overwritten by the benchmark's latest run (the history is in git), and
docs/performance.md includes it as it is.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLES = ROOT / "docs" / "bench"


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (Linux), else the platform's word for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def commit() -> str:
    """The checkout's commit, marked when the working tree differs from it (a benchmark of uncommitted code)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} with uncommitted changes" if dirty.strip() else head


def stamp(threads: int | str, device: str = "cpu") -> str:
    """One line: the CPU (or GPU), its cores, torch's threads, torch's version and the commit."""
    import torch

    where = f"{cpu_model()} ({os.cpu_count()} cores)"
    if device == "cuda":
        where = f"{torch.cuda.get_device_name()} with {where}"
    return f"{where}, {threads} torch thread(s), torch {torch.__version__}, commit {commit()}"


def command(script: str, argv: Sequence[str] | None = None) -> str:
    """The command line that reruns this benchmark, without `--data-dir` (a path of one machine: the
    data folder is ARCHSEARCH_DATA's to say)."""
    args = list(sys.argv[1:] if argv is None else argv)
    kept = []
    while args:
        arg = args.pop(0)
        if arg == "--data-dir":
            args[:1] = []
        elif not arg.startswith("--data-dir="):
            kept.append(arg)
    return shlex.join([".venv/bin/python", f"bench/{script}", *kept])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[bool] = ()) -> str:
    """A Markdown table; `right[i]` aligns column i to the right (numbers)."""
    align = ["---:" if i < len(right) and right[i] else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(name: str, table: str, command: str, threads: int | str, device: str = "cpu") -> Path:
    """docs/bench/NAME.md: the stamp, the command that regenerates it, then the table."""
    TABLES.mkdir(parents=True, exist_ok=True)
    path = TABLES / f"{name}.md"
    path.write_text(f"Measured on {stamp(threads, device)}; regenerate with `{command}`.\n\n{table}")
    print(f"table written to {path.relative_to(ROOT)}")
    return path
