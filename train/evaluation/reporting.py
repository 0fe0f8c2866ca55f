"""What the evaluation commands print and record: the machine, Markdown tables, and the one-line
error of a bad request."""

from __future__ import annotations

import math
import platform
import shlex
import sys
from pathlib import Path
from typing import Callable

import torch

from presto_core.errors import PrestoError


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def fmt(v, digits: int = 3) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, float) and math.isfinite(v) and v == round(v, 2) and abs(v) < 10:
        return f"{v:g}"
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}" if abs(v) < 1e5 else f"{v:.3g}"


def markdown_table(rows: list[dict], cols: list[tuple[str, str]]) -> list[str]:
    """Markdown table lines of ``rows`` with ``cols`` = [(key, header), ...]."""
    out = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return out


def command_line(prog: str, argv: list[str]) -> str:
    """The shell command that reproduces a run (recorded in every report)."""
    return f"{prog} " + shlex.join(argv)


def run_reported(run: Callable, args, command: str) -> dict | None:
    """``run(args, command)`` -> its report; a PrestoError (a bad request or model folder) prints
    one line on stderr and gives None (the command then exits with status 2)."""
    try:
        return run(args, command)
    except PrestoError as e:
        print(f"error: {e}", file=sys.stderr)
        return None
