"""What the soak reads off the gateway while it runs (bench/soak.py): its process's RSS, threads, open file
descriptors and CPU from /proc, its gauges from /metrics, and the Redis keys under the run's prefix."""

from __future__ import annotations

import os
import re
import time
import urllib.request
from collections import Counter
from typing import Any

from config import HOST
from processes import proc_cpu_seconds
from targets import LiveTarget

METRICS = {
    "tasks": "mcpgw_asyncio_tasks",
    "sessions": "mcpgw_sessions",
    "shared_sessions": "mcpgw_shared_sessions",
    "session_objects": "mcpgw_session_objects",
    "streams": "mcpgw_streams",
    "stdio": "mcpgw_stdio_processes",
}


def metrics_text(target: LiveTarget, token: str) -> str:
    assert target.server is not None
    request = urllib.request.Request(f"http://{HOST}:{target.server.port}/metrics")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
        return response.read().decode()


def read_gauges(text: str) -> dict[str, float]:
    found = {}
    for key, name in METRICS.items():
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        if match:
            value = float(match.group(1))
            found[key] = int(value) if value.is_integer() else value
    return found


def proc_status(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    out["cpu_s"] = round(proc_cpu_seconds(pid), 2)
    return out


class RedisKeys:
    """The keys under the run's prefix (and nothing else: the database may be shared)."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=10)
        self.prefix = prefix

    def keys(self) -> list[str]:
        return [k.decode() for k in self.client.scan_iter(match=f"{self.prefix}:*", count=1000)]

    def kinds(self) -> dict[str, int]:
        """Keys by kind: the part after the prefix up to the session id or the first variable part."""
        counted: Counter[str] = Counter()
        for key in self.keys():
            parts = key[len(self.prefix) + 1 :].split(":")
            if parts[0] in ("s", "e", "c", "u"):  # session records, stream logs, claims, users' session sets
                kind = parts[0] + ":" + ("<id>:n" if parts[0] == "e" and parts[-1] == "n" else "<id>")
            else:
                kind = ":".join(p if len(p) < 20 else "<id>" for p in parts[:3])
            counted[kind] += 1
        return dict(sorted(counted.items()))


def sample(target: LiveTarget, token: str, redis_keys: RedisKeys | None, t0: float, phase: str) -> dict[str, Any]:
    assert target.server is not None
    row: dict[str, Any] = {"t": round(time.monotonic() - t0, 1), "phase": phase}
    row.update(proc_status(target.server.pid))
    try:
        row.update(read_gauges(metrics_text(target, token)))
    except Exception as exc:
        row["metrics_error"] = repr(exc)[:200]
    if "shared_sessions" in row:  # the shared store: live sessions are counted there
        row["sessions"] = row.pop("shared_sessions")
    if redis_keys is not None:
        try:
            row["redis_keys"] = len(redis_keys.keys())
        except Exception as exc:
            row["redis_error"] = repr(exc)[:200]
    return row
