"""What a benchmark run ran on: the machine, the versions measured, and other work on it at the time."""

# ruff: noqa: S603, S607
from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from importlib import metadata
from typing import Any

from config import PY_SPY, ROOT
from processes import nginx_binary
from targets import CF_VENV


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in (
        "django",
        "channels",
        "daphne",
        "uvicorn",
        "mcp",
        "aiohttp",
        "orjson",
        "psycopg",
        "channels-redis",
        "twisted",
        "uvloop",
        "httptools",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    git = ""
    with contextlib.suppress(Exception):
        git = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    dirty: list[str] = []
    with contextlib.suppress(Exception):
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout
        dirty = [line[3:] for line in status.splitlines() if line.strip()]
    for tool, argv in (
        (
            "contextforge",
            [
                str(CF_VENV / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('mcp-contextforge-gateway'))",
            ],
        ),
        ("py-spy", [str(PY_SPY), "--version"]),
    ):
        versions[tool] = None
        with contextlib.suppress(Exception):
            versions[tool] = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout.split()[-1]
    versions["nginx"] = None  # the scale-out cells' proxy
    nginx = nginx_binary()
    if nginx:
        with contextlib.suppress(Exception):
            answer = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=30)
            versions["nginx"] = (answer.stderr or answer.stdout).strip().rpartition("/")[2] or None
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = f.readline().split(":", 1)[1].strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": git,
        "git_modified": dirty,
    }


def machine_load() -> str:
    """The 1-minute load average and the busiest processes that are not ours (other work on the machine)."""
    ours = {os.getpid()}
    try:
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        ps = subprocess.run(
            ["ps", "-eo", "pid,ppid,pcpu,comm", "--sort=-pcpu", "--no-headers"], capture_output=True, text=True
        ).stdout.splitlines()
    except OSError:
        return ""
    busy = []
    for line in ps:
        parts = line.split(None, 3)
        if len(parts) == 4 and float(parts[2]) >= 20 and int(parts[0]) not in ours and int(parts[1]) not in ours:
            busy.append(f"{parts[3]} {parts[2]}%")
    with contextlib.suppress(OSError), open("/proc/pressure/cpu") as f:
        load += f" (CPU pressure: {f.readline().split()[2]})"  # avg60: share of time some task waited for a CPU
    return f"load average {load}" + (
        f"; busy processes not started by the benchmark: {', '.join(busy[:5])}" if busy else ""
    )
