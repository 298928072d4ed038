"""Running the benchmark's cells: one target, one workload, one concurrency, measured; and idle-session memory."""

# ruff: noqa: S603
from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import loadgen
from config import (
    MAX_CELL_SECONDS,
    MIN_OPS,
    PY_SPY,
)
from processes import cpu_by_pid, gc_pauses, group_pids, proc_cpu_seconds, proc_rss_mb, rss_sum_mb
from targets import (
    LiveTarget,
)
from workloads import (
    Workload,
)


def gc_summary(pauses: list[tuple[float, int, float]], seconds: float) -> dict[str, Any]:
    """Collections in a window: full (generation 2) ones, and the pause time of all logged ones."""
    full = [ms for _, gen, ms in pauses if gen == 2]
    return {
        "full": len(full),
        "full_max_ms": round(max(full), 1) if full else None,
        "pause_ms_per_s": round(sum(ms for _, _, ms in pauses) / seconds, 1) if seconds else None,
        "max_ms": round(max(ms for _, _, ms in pauses), 1) if pauses else None,
    }


def tail_in_gc(result: loadgen.CellResult, pauses: list[tuple[float, int, float]], p99: float | None) -> float | None:
    """Share of the operations at or above p99 that overlapped a GC pause of >= 10 ms (server or upstream)."""
    if p99 is None or not result.samples_ms:
        return None
    long_pauses = [(end - ms / 1000, end) for end, _, ms in pauses if ms >= 10]
    slow = [(s, s + ms / 1000) for s, ms in zip(result.starts, result.samples_ms, strict=True) if ms >= p99]
    if not slow:
        return None
    hit = sum(any(a < e and b > s for a, b in long_pauses) for s, e in slow)
    return round(hit / len(slow), 3)


def measure_cell(
    target: LiveTarget,
    workload: Workload,
    concurrency: int,
    warmup: float,
    duration: float,
    profile_out: Path | None = None,
    profile_rate: int = 250,
) -> dict[str, Any]:
    upstream = target.upstream(workload.endpoint)
    up_pid = upstream.pid
    # Every process serving the target (workers, uvicorn's supervisor, nginx), looked up before the cell: the CPU
    # per operation is their sum.
    roles = {pid: role for role, server in target.serving() for pid in group_pids(server.pid)}
    marks: dict[str, float] = {}
    cpu: dict[str, dict[int, float]] = {}
    spy: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        marks["t0"] = time.time()
        marks["up0"] = proc_cpu_seconds(up_pid)
        cpu["start"] = cpu_by_pid(list(roles))
        if profile_out is not None:
            # py-spy samples the serving process without pausing it (--nonblocking) until SIGINT at the end
            argv = [str(PY_SPY), "record", "--pid", str(target.pid(workload.endpoint)), "--rate", str(profile_rate)]
            argv += ["--format", "raw", "--nolineno", "--nonblocking", "--output", str(profile_out)]
            spy.append(
                subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            )

    def end() -> None:
        marks["t1"] = time.time()
        marks["up1"] = proc_cpu_seconds(up_pid)
        cpu["end"] = cpu_by_pid(list(roles))
        for process in spy:
            process.send_signal(signal.SIGINT)

    result = asyncio.run(
        loadgen.run_cell(
            url=target.urls[workload.endpoint],
            token=target.token,
            operation=workload.operation,
            concurrency=concurrency,
            warmup=warmup,
            duration=duration,
            session_per_op=workload.session_per_op,
            aliases=target.aliases,
            on_measure_start=start,
            on_measure_end=end,
            min_ops=MIN_OPS,
            max_duration=MAX_CELL_SECONDS,
        )
    )
    for process in spy:
        try:
            _, err = process.communicate(timeout=60)
            if process.returncode not in (0, -signal.SIGINT) and not (profile_out and profile_out.exists()):
                print(f"  py-spy failed ({process.returncode}): {err.decode(errors='replace')[-500:]}", flush=True)
        except subprocess.TimeoutExpired:
            process.kill()
    row = result.summary()

    def per_op(seconds: float) -> float | None:  # None when no operation completed in the window
        return round(seconds * 1000 / result.ops, 4) if result.ops else None

    row["upstream_cpu_ms_per_op"] = per_op(marks["up1"] - marks["up0"])
    row["upstream_rss_mb"] = proc_rss_mb(up_pid)
    if roles:
        # A process that exited during the cell (none should) is left out of both ends.
        used = {pid: cpu["end"][pid] - cpu["start"][pid] for pid in cpu["end"] if pid in cpu["start"]}
        row["server_cpu_ms_per_op"] = per_op(sum(used.values()))
        proxy = [seconds for pid, seconds in used.items() if roles[pid] == "proxy"]
        row["proxy_cpu_ms_per_op"] = per_op(sum(proxy)) if proxy else None
        if target.spec.workers > 1:
            # How the work was shared: the busiest `workers` processes' shares of the gateway processes' CPU.
            gateway = sorted((s for pid, s in used.items() if roles[pid] == "gateway"), reverse=True)
            total = sum(gateway)
            row["worker_split"] = [round(s / total, 3) for s in gateway[: target.spec.workers]] if total else None
        row["server_rss_mb"] = rss_sum_mb(list(roles))
    else:
        row["server_cpu_ms_per_op"] = row["upstream_cpu_ms_per_op"]
        row["server_rss_mb"] = row["upstream_rss_mb"]
    window = marks["t1"] - marks["t0"]
    up_pauses = gc_pauses(upstream, marks["t0"], marks["t1"])
    row["upstream_gc"] = gc_summary(up_pauses, window)
    all_pauses = list(up_pauses)
    if target.server:
        # Every gateway process logs its pauses (uvicorn's workers into one shared file); nginx logs none.
        server_pauses = [
            p for role, s in target.serving() if role == "gateway" for p in gc_pauses(s, marks["t0"], marks["t1"])
        ]
        row["server_gc"] = gc_summary(server_pauses, window)
        all_pauses += server_pauses
    else:
        row["server_gc"] = row["upstream_gc"]
    row["tail_in_gc"] = tail_in_gc(result, all_pauses, row["p99_ms"])
    return row


def idle_sessions(target: LiveTarget, steps: list[int], time_limit: float | None) -> list[dict[str, Any]]:
    """RSS of the serving process before and after opening idle sessions, cumulatively up to each step."""
    if target.server:
        # A fresh process, so the figure is not inflated by the heap high-water mark of the load cells.
        target.server.stop()
        target.server.start(timeout=120)
        asyncio.run(
            loadgen.open_idle_sessions(target.urls["up"], target.token, 1, concurrency=1)
        )  # warm: snapshot, auth
    pid = target.pid("up")
    out = []
    base = proc_rss_mb(pid)
    opened_total = first = 0 if not target.server else 1
    for step in steps:
        t0 = time.monotonic()
        got = asyncio.run(
            loadgen.open_idle_sessions(target.urls["up"], target.token, step - opened_total, time_limit=time_limit)
        )
        opened_total += got.opened
        time.sleep(0.5)
        rss = proc_rss_mb(pid)
        row = {
            "step": step,
            "sessions": opened_total,
            "errors": got.errors,
            "with_session_id": got.with_session_id,
            "time_limited": got.time_limited,
            "error_examples": got.error_examples,
            "rss_before_mb": base,
            "rss_after_mb": rss,
            "delta_mb": round(rss - base, 1),
            "kb_per_session": round((rss - base) * 1024 / (opened_total - first), 1) if opened_total > first else None,
            "seconds": round(time.monotonic() - t0, 1),
        }
        if target.server:
            row["upstream_rss_mb"] = proc_rss_mb(target.upstreams["up"].pid)
        out.append(row)
        print(f"  idle sessions {target.spec.name}: {row}", flush=True)
        if got.time_limited:
            break
    return out
