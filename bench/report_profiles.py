"""Where the time goes, in docs/performance.md: the latency tail beside the garbage collector's pauses,
the py-spy profiles; and the hand-written findings (bench/findings.md) that read them."""

# ruff: noqa: E501, RUF001
from __future__ import annotations

from typing import Any

from config import FINDINGS_PATH
from report_common import fmt


def gc_tail_lines(report: dict[str, Any]) -> list[str]:
    cells = report["cells"]
    tail = [c for c in cells if c["workload"] == "tools_call" and c.get("upstream_gc")]
    if not tail:
        return []
    lines = [
        "",
        "## Latency tail and garbage collection (tools_call)",
        "",
        "Every server process of the run logs its garbage-collector pauses (`bench/gcprobe/sitecustomize.py`, on "
        "`PYTHONPATH` with `BENCH_GC_LOG`: one line per collection of ≥ 1 ms or of generation 2). Per cell "
        "(the middle round): full (generation 2) collections in the measured window and the longest, the pause time per second "
        "of all logged collections, for the serving process and for the upstream fixture; `p99 ops in a GC "
        "pause` is the share of operations at or above the cell's p99 whose time overlapped a pause of ≥ 10 ms "
        "in either process (median over rounds).",
        "",
        "| c | target | p50 ms | p99 ms | max ms | server: full GCs, longest ms, pause ms/s | upstream: full GCs, longest ms, pause ms/s | p99 ops in a GC pause |",
        "|---:|---|---:|---:|---:|---|---|---:|",
    ]

    def gc_text(g: dict[str, Any] | None) -> str:
        if not g:
            return "–"
        return f"{g['full']}, {fmt(g['full_max_ms'], 0)}, {fmt(g['pause_ms_per_s'], 1)}"

    for c in tail:
        server_gc = gc_text(c.get("server_gc")) if c["target"] != "direct" else "(the upstream)"
        share = f"{c['tail_in_gc'] * 100:.0f}%" if c.get("tail_in_gc") is not None else "–"
        lines.append(
            f"| {c['concurrency']} | {c['target']} | {fmt(c['p50_ms'])} | {fmt(c['p99_ms'])} | {fmt(c['max_ms'])} | "
            f"{server_gc} | {gc_text(c.get('upstream_gc'))} | {share} |"
        )
    return lines


def profiles_lines(report: dict[str, Any]) -> list[str]:
    cfg = report["config"]
    profiles = report.get("profiles") or []
    if not profiles:
        return []
    lines = [
        "",
        "## Profiles",
        "",
        "py-spy (`record --nonblocking --nolineno`, Python frames only, "
        f"{cfg.get('profile_duration') or ''} s measured, 250 samples/s) on the serving process during an extra cell "
        "run after the rounds (not part of the results above). Samples where the event loop waits in `epoll` "
        "are left out (counted as `waiting`); the rest is the process at work. `own` is the share of those samples "
        "with the function at the top of the stack, `total` with it anywhere in the stack. Time in C code "
        "(orjson, the socket system calls, CPython itself) counts as the Python function that called it; the two "
        "`send()` rows are the kernel's time writing to the sockets.",
    ]
    for prof in profiles:
        cell = prof["cell"]
        lines += [
            "",
            f"### {prof['target']}, {prof['workload']}, c={prof['concurrency']}",
            "",
            f"{prof.get('samples', 0):,} samples at work ({prof.get('waiting', 0):,} waiting); the cell under py-spy: {fmt(cell['rps'], 0)} req/s, "
            f"p50 {fmt(cell['p50_ms'])} ms, p99 {fmt(cell['p99_ms'])} ms, server CPU {fmt(cell['server_cpu_ms_per_op'], 3)} ms/op.",
        ]
        if not prof.get("samples"):
            lines.append("")
            lines.append("No samples (py-spy could not attach; see the run's output).")
            continue
        lines += ["", "Own time by where the code lives (leaf frame's file):", "", "| part | own % |", "|---|---:|"]
        for name, pct in prof["categories"]:
            lines.append(f"| {name} | {pct} |")
        lines += ["", "Top functions by own time:", "", "| function | own % | total % |", "|---|---:|---:|"]
        for frame, own_pct, total_pct in prof["top_own"][:20]:
            lines.append(f"| `{frame}` | {own_pct} | {total_pct} |")
        lines += [
            "",
            "Top functions by total time (frames in more than 85% of the samples, the event loop and daphne's "
            "entry points, are left out):",
            "",
            "| function | own % | total % |",
            "|---|---:|---:|",
        ]
        for frame, own_pct, total_pct in [t for t in prof["top_total"] if t[2] <= 85][:20]:
            lines.append(f"| `{frame}` | {own_pct} | {total_pct} |")
    return lines


def findings_lines() -> list[str]:
    if not FINDINGS_PATH.exists():
        return []
    findings = FINDINGS_PATH.read_text().strip().split("\n")
    if findings and findings[0].startswith("# "):
        findings = findings[1:]
    return ["", "## Findings (hand-written: `bench/findings.md`)", "", *findings]
