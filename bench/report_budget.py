"""The benchmark's verdicts: the budget table (issues #4 and #8) and the before/after comparison of a
--baseline run (bench/report.py puts both in docs/performance.md; bench/run.py prints them).
"""

# ruff: noqa: E501, RUF001
from __future__ import annotations

from typing import Any

from config import MANY_TOOLS
from report_common import find, fmt
from targets import BASELINE_SUFFIX, SCALE, is_baseline


def budget(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    cells = report["cells"]
    gw = "gw-daphne-sqlite"
    rows: list[tuple[str, str, str]] = []

    # 1. tools/call at most 1.0 ms gateway CPU per call
    # The budget judges this working tree: --baseline cells are left out (section "Before and after").
    measured = [
        c
        for c in cells
        if c["workload"] == "tools_call"
        and c["target"].startswith("gw-")
        and not is_baseline(c["target"])
        and c.get("group") != SCALE  # several processes and nginx: the section "Scale-out" has them
    ]
    if measured:
        worst = {c["target"]: c for c in measured}
        parts = [f"{c['target']} c={c['concurrency']}: {fmt(c['server_cpu_ms_per_op'])} ms" for c in measured]
        # The direct upstream's own CPU per call in the same cells: a yardstick for how fast this machine ran.
        yardstick = [
            f"c={d['concurrency']}: {fmt(d['server_cpu_ms_per_op'])} ms"
            for d in cells
            if d["workload"] == "tools_call" and d["target"] == "direct"
        ]
        if yardstick:
            parts.append(f"(the direct upstream itself, same cells: {', '.join(yardstick)})")

        def under(c: dict[str, Any]) -> bool:
            return c["server_cpu_ms_per_op"] is not None and c["server_cpu_ms_per_op"] <= 1.0

        ok = all(under(c) for c in measured if c["target"] == gw)
        any_ok = [t for t in worst if all(under(c) for c in measured if c["target"] == t)]
        status = "met" if ok else "not met"
        if not ok and any_ok:
            status += f" (met by {', '.join(any_ok)})"
        rows.append(("tools/call ≤ 1.0 ms gateway CPU per call", status, "; ".join(parts)))
    else:
        rows.append(("tools/call ≤ 1.0 ms gateway CPU per call", "not measured", ""))

    # 2. latency added over direct at c=1
    d = find(cells, "direct", "tools_call", 1)
    g = find(cells, gw, "tools_call", 1)
    if d and g and d["p50_ms"] is not None and g["p50_ms"] is not None:
        a50 = g["p50_ms"] - d["p50_ms"]
        a99 = g["p99_ms"] - d["p99_ms"]
        rows.append(
            (
                "tools/call latency added over direct, c=1, p50 ≤ 1.5 ms",
                "met" if a50 <= 1.5 else "not met",
                f"{gw}: +{a50:.2f} ms ({g['p50_ms']:.2f} vs {d['p50_ms']:.2f})",
            )
        )
        rows.append(
            (
                "tools/call latency added over direct, c=1, p99 ≤ 5 ms",
                "met" if a99 <= 5 else "not met",
                f"{gw}: +{a99:.2f} ms ({g['p99_ms']:.2f} vs {d['p99_ms']:.2f})",
            )
        )
    else:
        rows.append(("tools/call latency added over direct, c=1, p50 ≤ 1.5 ms / p99 ≤ 5 ms", "not measured", ""))

    # 3. tools/list first page p50 ≤ 10 ms with 10,000 tools
    g = find(cells, gw, "tools_list_10k", 1)
    if g and g["p50_ms"] is not None:
        rows.append(
            (
                f"tools/list first page p50 ≤ 10 ms with {MANY_TOOLS:,} tools (c=1)",
                "met" if g["p50_ms"] <= 10 else "not met",
                f"{gw}: p50 {g['p50_ms']:.2f} ms, {g['errors']} errors",
            )
        )
    else:
        rows.append((f"tools/list first page p50 ≤ 10 ms with {MANY_TOOLS:,} tools", "not measured", ""))

    # 4. 10,000 idle sessions ≤ 200 MB
    all_idle = report.get("idle_sessions", {})
    idle = all_idle.get(gw, [])
    big = [r for r in idle if r["sessions"] >= 10_000]
    if big:
        r = big[-1]
        others = [
            f"{name}: {rs[-1]['rss_after_mb']} MB"
            for name, rs in all_idle.items()
            if name.startswith("gw-") and not is_baseline(name) and name != gw and rs and rs[-1]["sessions"] >= 10_000
        ]
        rows.append(
            (
                "10,000 idle sessions ≤ 200 MB (gateway RSS)",
                "met" if r["rss_after_mb"] <= 200 and not r["errors"] else "not met",
                f"{gw}: {r['rss_after_mb']} MB RSS after {r['sessions']:,} sessions (+{r['delta_mb']} MB, {r['errors']} errors)"
                + (f"; {'; '.join(others)}" if others else ""),
            )
        )
    elif idle:
        r = idle[-1]
        est = r["rss_before_mb"] + (r["kb_per_session"] or 0) * 10_000 / 1024
        rows.append(
            (
                "10,000 idle sessions ≤ 200 MB",
                "not measured",
                f"only {r['sessions']:,} opened: {r['rss_after_mb']} MB; linear estimate for 10,000: {est:.0f} MB",
            )
        )
    else:
        rows.append(("10,000 idle sessions ≤ 200 MB", "not measured", ""))

    # 5. no errors at c=256
    c256 = [
        c for c in cells if c["concurrency"] == 256 and c["target"].startswith("gw-") and not is_baseline(c["target"])
    ]
    if c256:
        bad = [f"{c['target']}/{c['workload']}: {c['errors']}" for c in c256 if c["errors"]]
        rows.append(
            (
                "no errors at c=256",
                "not met" if bad else "met",
                "; ".join(bad) or f"{len(c256)} gateway cells, 0 errors",
            )
        )
    else:
        rows.append(("no errors at c=256", "not measured", ""))

    # 6. at least 15x ContextForge's tools/call throughput
    pairs = []
    for c in (1, 32):
        g, cf = find(cells, gw, "tools_call", c), find(cells, "contextforge", "tools_call", c)
        if g and cf and g["rps"] and cf["rps"]:
            pairs.append((c, g["rps"] / cf["rps"], g, cf))
    if pairs:
        rows.append(
            (
                "tools/call ≥ 15× ContextForge's throughput",
                "met" if all(ratio >= 15 for _, ratio, _, _ in pairs) else "not met",
                "; ".join(
                    f"c={c}: {ratio:.0f}× ({fmt(g['rps'], 0)} vs {fmt(cf['rps'], 0)} req/s; CPU per call "
                    f"{fmt(g['server_cpu_ms_per_op'])} vs {fmt(cf['server_cpu_ms_per_op'])} ms)"
                    for c, ratio, g, cf in pairs
                ),
            )
        )
    else:
        rows.append(("tools/call ≥ 15× ContextForge's throughput", "not measured", ""))

    # 7. (issue #8) a REST tool call costs no more gateway CPU than an upstream MCP tool call
    rest_pairs = []
    for r in cells:
        if r["workload"] != "rest_tools_call" or is_baseline(r["target"]):
            continue
        m = find(cells, r["target"], "tools_call", r["concurrency"])
        if m and m["server_cpu_ms_per_op"] and r["server_cpu_ms_per_op"]:
            rest_pairs.append((r, m))
    title = "REST tool call ≤ upstream MCP tool call, gateway CPU"
    if rest_pairs:
        rows.append(
            (
                title,
                "met"
                if all(r["server_cpu_ms_per_op"] <= m["server_cpu_ms_per_op"] for r, m in rest_pairs)
                else "not met",
                "; ".join(
                    f"{r['target']} c={r['concurrency']}: {fmt(r['server_cpu_ms_per_op'])} vs "
                    f"{fmt(m['server_cpu_ms_per_op'])} ms"
                    for r, m in rest_pairs
                ),
            )
        )
    else:
        rows.append((title, "not measured", ""))
    return rows


def before_after(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each --baseline cell beside the same cell of the working tree (same run, same rounds)."""
    cells = report["cells"]
    rows = []
    for base in cells:
        if not is_baseline(base["target"]):
            continue
        now = find(cells, base["target"].removesuffix(BASELINE_SUFFIX), base["workload"], base["concurrency"])
        if now is None:
            continue
        b_cpu, n_cpu = base["server_cpu_ms_per_op"], now["server_cpu_ms_per_op"]
        rows.append(
            {
                "workload": base["workload"],
                "concurrency": base["concurrency"],
                "target": now["target"],
                "before_cpu": b_cpu,
                "after_cpu": n_cpu,
                "change_pct": round(100 * (n_cpu - b_cpu) / b_cpu, 1) if b_cpu and n_cpu is not None else None,
                "before_rps": base["rps"],
                "after_rps": now["rps"],
                "before_p50": base["p50_ms"],
                "after_p50": now["p50_ms"],
                "before_rounds": [r["server_cpu_ms_per_op"] for r in base.get("rounds", [])],
                "after_rounds": [r["server_cpu_ms_per_op"] for r in now.get("rounds", [])],
                "errors": base["errors"] + now["errors"],
            }
        )
    return rows


def before_after_lines(report: dict[str, Any]) -> list[str]:
    rows = before_after(report)
    info = report.get("baseline") or {}
    if not rows:
        return []
    lines = [
        "",
        "## Before and after (`--baseline`)",
        "",
        f"The baseline is git `{info.get('ref')}` (`{info.get('commit', '')[:10]}`: {info.get('subject', '')}), "
        "exported into a temporary directory outside the repository and run with the same venv, settings, upstream "
        "fixtures and load generator as the working tree; each `…-baseline` target is interleaved with its "
        "working-tree twin in every round (the order alternates between rounds). A checkout without "
        "`gateway_project/daphne_server.py` is served by plain daphne, as `make run` served it then. CPU ms per "
        "operation of the gateway process (median over rounds; each round's figure in the last column, baseline / "
        "now). On a shared machine compare these figures, not requests/s or latency, and trust a change only "
        "when the rounds agree.",
        "",
        "| workload | c | target | CPU ms/op before | CPU ms/op now | change | req/s before → now | p50 ms before → now | CPU per round: before / now |",
        "|---|---:|---|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        change = f"{r['change_pct']:+.1f}%" if r["change_pct"] is not None else "–"
        rounds = (
            " ".join(fmt(x, 3) for x in r["before_rounds"]) + " / " + " ".join(fmt(x, 3) for x in r["after_rounds"])
        )
        lines.append(
            f"| {r['workload']} | {r['concurrency']} | {r['target']} | {fmt(r['before_cpu'], 3)} | "
            f"{fmt(r['after_cpu'], 3)} | {change} | {fmt(r['before_rps'], 0)} → {fmt(r['after_rps'], 0)} | "
            f"{fmt(r['before_p50'])} → {fmt(r['after_p50'])} | {rounds} |"
        )
    return lines
