"""The benchmark's report: the budget table, the before/after comparison and docs/performance.md
rendered from a run's results.
"""

# ruff: noqa: E501, RUF001
from __future__ import annotations

from pathlib import Path
from typing import Any

from config import (
    DOC_PATH,
    FINDINGS_PATH,
    MANY_TOOLS,
    MANY_TOOLS_PAGE,
    MAX_CELL_SECONDS,
    MIN_OPS,
    ROOT,
)
from soak_report import kept_section
from targets import (
    BASELINE_SUFFIX,
    CF_MAX_CONCURRENCY,
    SCALE,
    is_baseline,
)


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def find(cells: list[dict[str, Any]], target: str, workload: str, concurrency: int) -> dict[str, Any] | None:
    for c in cells:
        if c["target"] == target and c["workload"] == workload and c["concurrency"] == concurrency:
            return c
    return None


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


def scale_out(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The scale-out cells (tools_call), each with what it is compared with: the same serving with one worker,
    and ContextForge with as many workers."""
    cells = report["cells"]
    specs = [t for t in report["targets"] if t.get("group") == SCALE and not is_baseline(t["name"])]

    def one_worker(spec: dict[str, Any]) -> str | None:
        """The target serving the same way with one worker (and no nginx)."""
        for t in specs:
            same = (t.get("kind"), t.get("server")) == (spec.get("kind"), spec.get("server"))
            if same and t.get("workers") == 1 and not t.get("front") and t["name"] != spec["name"]:
                return str(t["name"])
        return None

    def contextforge(workers: int) -> str | None:
        return next((t["name"] for t in specs if t.get("kind") == "contextforge" and t.get("workers") == workers), None)

    rows = []
    for spec in specs:
        for c in cells:
            if c["target"] != spec["name"] or c["workload"] != "tools_call":
                continue
            base = find(cells, one_worker(spec) or "", "tools_call", c["concurrency"])
            peer = None
            if spec.get("kind") == "gateway":
                peer = find(cells, contextforge(spec.get("workers", 1)) or "", "tools_call", c["concurrency"])
            rows.append(
                {
                    "cell": c,
                    "spec": spec,
                    "vs_one": c["rps"] / base["rps"] if base and base["rps"] else None,
                    "vs_cf": c["rps"] / peer["rps"] if peer and peer["rps"] else None,
                    "cf_cpu_ratio": (
                        peer["server_cpu_ms_per_op"] / c["server_cpu_ms_per_op"]
                        if peer and peer["server_cpu_ms_per_op"] and c["server_cpu_ms_per_op"]
                        else None
                    ),
                }
            )
    rows.sort(key=lambda r: r["cell"]["concurrency"])  # stable: the targets' order within each concurrency
    return rows


def scale_out_lines(report: dict[str, Any]) -> list[str]:
    rows = scale_out(report)
    if not rows:
        return []
    nproc = report["machine"].get("nproc")
    lines = [
        "",
        "## Scale-out (issue #16): workers, replicas and ContextForge",
        "",
        "`tools/call` of `echo` on PostgreSQL + Redis (production settings: sessions and the channel layer in "
        "Redis, so any process takes any request) with one and two worker processes, served two ways: one command "
        "running N workers on one listening socket (`uvicorn --workers N`; the kernel hands each new connection to "
        "one worker, which keeps it), and N separate processes behind nginx (round robin per request, no affinity, "
        "keep-alive connections to the processes, as `deploy/nginx.conf` and the replicas tests have it: this is "
        "also what two replicas behind a load balancer are, here on one host). ContextForge runs with as many "
        "uvicorn workers (`mcpgateway --workers N`). Every target calls the same upstream: `bench/fast_upstream.py`, "
        "a minimal dual-era Streamable HTTP server (raw asyncio, orjson) that spends a few hundredths of a "
        "millisecond per call (`direct-fast`, its own CPU), so the gateway and not the upstream is what saturates "
        "(the `mcp` SDK fixture behind the other sections saturates near 500 calls/s on 2 CPUs).",
        "",
        "`CPU ms/call` is the CPU time of every process of the target per call, summed: each worker, uvicorn's "
        "supervisor process, and nginx where it is in the path (`of which nginx` shows its part). The upstream's CPU "
        "is not in it (`upstream CPU`), nor are the PostgreSQL and Redis servers' (shared services of the machine). "
        "`workers' split` is each worker's share of the gateway processes' CPU (how evenly the work was spread). "
        "`× 1 worker` is the requests/s over the same serving with one worker in the same run; `× ContextForge` is "
        "requests/s over ContextForge's with the same number of workers, and ContextForge's CPU per call over this "
        "target's. The load generator (one Python process) shares the machine"
        + (f" ({nproc} CPUs)" if nproc else "")
        + " with every server: where the CPUs are all busy, two workers cannot take twice the calls, so compare the "
        "CPU per call and the split, and read requests/s as a lower bound. Every process of the benchmark runs in "
        "one session (each server in a process group of its own): with the kernel's autogroup scheduling a "
        "session gets one share of the CPUs, so servers in sessions of their own would favour N processes behind "
        "nginx (N shares) over one command with N workers (one share) whenever the CPUs are contended.",
        "",
        "| c | target | workers | req/s | × 1 worker | p50 ms | p99 ms | errors | CPU ms/call | of which nginx | workers' split | upstream CPU ms/call | × ContextForge: req/s, CPU |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        c = r["cell"]
        split = " / ".join(f"{share * 100:.0f}%" for share in c["worker_split"]) if c.get("worker_split") else "–"
        spec = r["spec"]
        workers = (
            "–"
            if spec.get("kind") == "direct"
            else f"{spec.get('workers', 1)}" + (" + nginx" if spec.get("front") else "")
        )
        versus = f"{r['vs_cf']:.0f}×, {r['cf_cpu_ratio']:.0f}×" if r["vs_cf"] and r["cf_cpu_ratio"] else "–"
        vs_one = f"{r['vs_one']:.2f}×" if r["vs_one"] else "–"
        lines.append(
            f"| {c['concurrency']} | {c['target']} | {workers} | {fmt(c['rps'], 0)} | {vs_one} | {fmt(c['p50_ms'])} | "
            f"{fmt(c['p99_ms'])} | {c['errors']} | {fmt(c['server_cpu_ms_per_op'], 3)} | "
            f"{fmt(c.get('proxy_cpu_ms_per_op'), 3)} | {split} | {fmt(c['upstream_cpu_ms_per_op'], 3)} | {versus} |"
        )
    return lines


def write_markdown(report: dict[str, Any], json_path: Path) -> None:
    m = report["machine"]
    cfg = report["config"]
    v = m["versions"]
    cells = report["cells"]
    lines = [
        "# Performance",
        "",
        "Generated by `make bench` (`bench/run.py`); do not edit by hand, rerun it (the findings section comes from "
        f"`bench/findings.md`, written by hand). Raw results: `{json_path.relative_to(ROOT)}`.",
        "",
        "## How to reproduce",
        "",
        "```bash",
        "make bench                                   # full run with profiles (writes this file and bench/results/<timestamp>.json)",
        ".venv/bin/python bench/run.py --quick        # shorter cells, c=1 and 32 only, one round",
        ".venv/bin/python bench/run.py --targets direct,gw-daphne-sqlite --workloads tools_call --profile",
        ".venv/bin/python bench/run.py --targets scale              # the scale-out cells alone (make bench runs them too)",
        ".venv/bin/python bench/run.py --targets core               # everything but the scale-out cells",
        "make bench-compare                           # tools_call CPU per call of HEAD (the baseline) and the working tree, same run",
        "make bench-compare BASELINE=main BENCH_ARGS='--repeat 5'   # any git ref; BENCH_ARGS are added",
        ".venv/bin/python bench/run.py --baseline HEAD~3 --workloads tools_call,tools_list_10 --idle-sessions 0",
        ".venv/bin/python bench/run.py --from-json bench/results/<timestamp>.json   # re-render this file",
        "```",
        "",
        "Everything runs on 127.0.0.1 and stops by itself. The PostgreSQL target needs a server at "
        "`postgres://postgres@127.0.0.1:5432` (a database is created and dropped) and Redis at "
        "`redis://127.0.0.1:6379/1` (`BENCH_REDIS_URL`; each target's keys under a prefix of its own, deleted at the end, "
        "nothing else); it is skipped with a message when they are not reachable. The `contextforge` "
        "comparison target runs when ContextForge is installed in its own venv, not a project dependency (`make bench` "
        "does it: `make contextforge` puts `mcp-contextforge-gateway==1.1.0` into `.tools/contextforge` with a "
        "Python 3.12). It runs every workload at c ≤ "
        f"{CF_MAX_CONCURRENCY}: at about 30 requests/s, c=256 spends its whole cell opening the 256 sessions "
        "(an earlier run completed no operation there). It renames upstream tools (gateway prefix), so the harness "
        "maps `echo` to its name from `GET /tools`; its virtual servers are built from the same bulk upstream with "
        "the same tools as the gateway's. Its Streamable HTTP is stateless by default (no `Mcp-Session-Id`), and "
        "it ran that way. `--profile` needs py-spy in `.tools/` (`make py-spy`, which `make bench` runs).",
        "",
        "Before and after in one run: `--baseline REF` (what `make bench-compare` runs, REF `HEAD` by default, so "
        "it measures the uncommitted changes) exports git REF with `git archive` into the run's temporary "
        "directory (outside the repository; no worktree is registered, nothing in the checkout changes) and runs "
        "every selected gateway target a second time from there, as `<target>-baseline`, with the same venv, "
        "settings and upstream fixtures, interleaved with the working tree's target in every round. Narrow it with "
        "`--workloads` and `--targets`; `bench/` itself always comes from the working tree; the budget ignores the "
        'baseline cells, idle sessions skip them, and a section "Before and after" compares CPU per operation '
        "round by round (also printed at the end of the run). Gateway targets on daphne run "
        "`python -m gateway_project.daphne_server` as `make run` does (plain `python -m daphne` for a REF that "
        "predates it).",
        "",
        'The scale-out cells (section "Scale-out", `--targets scale`) need PostgreSQL and Redis as above and nginx '
        "(`make system-deps`); without nginx the targets behind it are skipped with a note. They run `tools_call` "
        "only, at c=32 and 128 unless `--concurrency` says otherwise, against `bench/fast_upstream.py`, and skip the "
        "idle-sessions step.",
        "",
        "## This run",
        "",
        f"- Date: {report['started']} (UTC), duration {report['elapsed_s']:.0f} s, git `{m['git_commit']}`"
        + (
            f" plus uncommitted changes to {len(m['git_modified'])} tracked file(s): "
            + ", ".join(f"`{f}`" for f in m["git_modified"][:12])
            if m.get("git_modified")
            else ""
        ),
        f"- Comparison and profiler: ContextForge {v.get('contextforge') or 'not installed'}, py-spy {v.get('py-spy') or 'not installed'}"
        + (f", nginx {v['nginx']}" if v.get("nginx") else ""),
        f"- Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['memory']} RAM, Linux {m['kernel']}",
        f"- Python {m['python']}; Django {v['django']}, channels {v['channels']}, daphne {v['daphne']} (Twisted {v['twisted']}), "
        f"uvicorn {v['uvicorn']} (uvloop {v['uvloop'] or 'not installed'}, httptools {v['httptools'] or 'not installed'}), "
        f"mcp {v['mcp']}, aiohttp {v['aiohttp']}, orjson {v['orjson']}, psycopg {v['psycopg']}, channels-redis {v['channels-redis']}",
        f"- Cells: {cfg['warmup']} s warm-up + {cfg['duration']} s measured each (each worker's session is opened "
        f"before the warm-up; a window is stretched until {MIN_OPS} operations completed, at most {MAX_CELL_SECONDS:.0f} s, "
        f"which only the slowest cells need: ContextForge's walks and c=32), concurrencies {cfg['concurrency']}"
        + (
            f" (the scale-out cells: {cfg['scale_concurrency']})"
            if cfg.get("scale_concurrency") and any(c.get("group") == SCALE for c in cells)
            else ""
        )
        + ", targets interleaved within each workload and "
        f"concurrency, **{cfg['repeat']} round(s)** (the target order alternates between rounds); every figure below "
        "is the median over the rounds (with two rounds: their mean), errors are summed, and the `per round` column "
        "shows each round's req/s and server CPU ms/op.",
        '- Each target is one worker process, except the scale-out targets (section "Scale-out"). The load generator (one asyncio process, aiohttp, one keep-alive '
        "connection and one MCP session per concurrent worker, protocol 2025-11-25) shares the machine with the "
        "servers, so requests/s and latency are bounded by the machine; CPU ms per request is the robust figure.",
    ]
    for note in report.get("machine_load", []):
        lines.append(f"- Machine load {note}")
    lines += ["", "Targets:", ""]
    for spec in report["targets"]:
        lines.append(f"- `{spec['name']}`: {spec['description']}")
    lines += ["", "Workloads:", ""]
    for w in report["workloads"]:
        lines.append(f"- `{w['name']}`: {w['description']}")
    lines += [
        "",
        "The `tools_list_*` and `tools_walk_*` workloads run against upstream fixtures serving exactly 10, 1,000 and "
        "10,000 tools (`--many-tools N --bulk-only`) for `direct`; the gateways and ContextForge register only the "
        "10,000-tool upstream and serve the smaller sizes through virtual servers holding exactly its first 10 and "
        "1,000 tools, so each target lists the same number of tools with the same names and schemas. Pages hold "
        f"{MANY_TOOLS_PAGE} tools everywhere (the gateway's default `GATEWAY_MCP_PAGE_SIZE`, the fixture's "
        "`--page-size`, ContextForge's default); each first page and each walk is checked for its tool count.",
        "",
        "## Budget (issues #4 and #8)",
        "",
        "Judged on `gw-daphne-sqlite` (the default deployment) unless the line says otherwise.",
        "",
        "| budget | status | measured |",
        "|---|---|---|",
    ]
    for name, status, detail in budget(report):
        lines.append(f"| {name} | **{status}** | {detail} |")
    lines += before_after_lines(report)
    lines += scale_out_lines(report)
    lines += [
        "",
        "## Results",
        "",
        "`server CPU` is the CPU time of the serving process per operation: the gateway process for `gw-*` "
        "targets and ContextForge, the upstream itself for `direct` (and `direct-fast`); for the scale-out targets "
        "every process of the target, nginx included. `upstream CPU` is the upstream fixture's CPU per "
        "operation (for `direct` it is the same process). `RSS` is the serving process's VmRSS at the end of the cell. "
        "`vs direct` is this target's requests/s and p50 divided by `direct`'s in the same cell of this run, and "
        "the p50 latency it adds (negative: faster than direct, e.g. answered from the catalog snapshot without the "
        "upstream). `upstream busy` is the upstream fixture's CPU use during the cell in percent of one "
        "core (upstream CPU ms/op × req/s): near 100% the upstream (one process of the `mcp` SDK), not the gateway, "
        "bounds requests/s and latency, so compare the gateway by its own CPU ms/op there. For the walks one "
        "operation is the whole walk (10 or 100 requests).",
        "",
        "| workload | c | target | req/s | p50 ms | p90 ms | p99 ms | errors | server CPU ms/op | upstream CPU ms/op | upstream busy | RSS MB | loadgen CPU ms/op | vs direct: req/s, p50, +p50 ms | per round: req/s · CPU ms/op |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for c in cells:
        d = find(cells, c.get("direct") or "direct", c["workload"], c["concurrency"])
        up_cpu = c["upstream_cpu_ms_per_op"]
        busy = f"{up_cpu * c['rps'] / 10:.0f}%" if up_cpu is not None else "–"
        ratio = ""
        if d and c["target"] != d["target"] and d["rps"] and c["p50_ms"] is not None and d["p50_ms"]:
            ratio = f"{c['rps'] / d['rps']:.2f}×, {c['p50_ms'] / d['p50_ms']:.2f}×, {c['p50_ms'] - d['p50_ms']:+.2f}"
        per_round = " / ".join(f"{fmt(r['rps'], 0)} · {fmt(r['server_cpu_ms_per_op'], 3)}" for r in c.get("rounds", []))
        lines.append(
            f"| {c['workload']} | {c['concurrency']} | {c['target']} | {fmt(c['rps'], 0)} | {fmt(c['p50_ms'])} | "
            f"{fmt(c['p90_ms'])} | {fmt(c['p99_ms'])} | {c['errors']} | {fmt(c['server_cpu_ms_per_op'], 3)} | "
            f"{fmt(c['upstream_cpu_ms_per_op'], 3)} | {busy} | {fmt(c['server_rss_mb'], 0)} | {fmt(c['loadgen_cpu_ms_per_op'], 3)} | {ratio} | {per_round} |"
        )
    empty = [c for c in cells if not c["ops"]]
    if empty:
        lines += ["", "Cells with no completed operation in the measured window:", ""]
        lines += [f"- {c['target']} / {c['workload']} / c={c['concurrency']}" for c in empty]
    if report.get("skipped_cells"):
        lines += [
            "",
            f"Cells not run (above the target's concurrency limit): {', '.join(report['skipped_cells'])}.",
        ]
    errs = [c for c in cells if c["error_examples"]]
    if errs:
        lines += ["", "Errors seen (first examples):", ""]
        for c in errs:
            lines.append(f"- {c['target']} / {c['workload']} / c={c['concurrency']}: `{c['error_examples'][0][:200]}`")

    cf_cells = [c for c in cells if c["target"] == "contextforge"]
    if cf_cells:
        lines += [
            "",
            "## Gateway vs ContextForge",
            "",
            "Pair by pair within this run: requests/s of each gateway target divided by ContextForge's, and "
            "ContextForge's CPU per operation divided by the gateway's.",
            "",
            "| workload | c | ContextForge req/s | ContextForge CPU ms/op | "
            + " | ".join(f"{t}: req/s ×, CPU ×" for t in ("gw-daphne-sqlite", "gw-daphne-pg", "gw-uvicorn-sqlite"))
            + " |",
            "|---|---:|---:|---:|---|---|---|",
        ]
        for cf in cf_cells:
            parts = []
            for t in ("gw-daphne-sqlite", "gw-daphne-pg", "gw-uvicorn-sqlite"):
                g = find(cells, t, cf["workload"], cf["concurrency"])
                if g and g["rps"] and cf["rps"] and g["server_cpu_ms_per_op"] and cf["server_cpu_ms_per_op"]:
                    parts.append(
                        f"{g['rps'] / cf['rps']:.0f}×, {cf['server_cpu_ms_per_op'] / g['server_cpu_ms_per_op']:.0f}×"
                    )
                else:
                    parts.append("–")
            lines.append(
                f"| {cf['workload']} | {cf['concurrency']} | {fmt(cf['rps'], 1)} | {fmt(cf['server_cpu_ms_per_op'], 1)} | "
                + " | ".join(parts)
                + " |"
            )

    tail = [c for c in cells if c["workload"] == "tools_call" and c.get("upstream_gc")]
    if tail:
        lines += [
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

    profiles = report.get("profiles") or []
    if profiles:
        lines += [
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

    idle = report.get("idle_sessions", {})
    if idle:
        limit = cfg.get("idle_time_limit")
        lines += [
            "",
            "## Idle sessions",
            "",
            "Sessions opened with `initialize` + `notifications/initialized` only (32 at a time) and left open; VmRSS of the serving "
            "process. Gateways and ContextForge are restarted first (a fresh process that has served one session, with the catalog of "
            "every upstream loaded, including the 10,000 bulk tools when the bulk workloads ran); the direct upstream is measured "
            "as it is after all its cells (for gateways, the upstream fixture's RSS is shown too: the gateway may hold an upstream "
            "session per client session). `with id`: answers that carried an `Mcp-Session-Id` (a stateless server keeps no session). "
            + (
                f"ContextForge opens about 35 sessions/s, so each of its steps stops starting new sessions after {limit:.0f} s "
                "(`time limit`) to keep the run short; the row shows how far it got."
                if limit
                else ""
            ),
            "",
            "| target | sessions open | with id | errors | RSS before MB | RSS after MB | delta MB | KB per session | upstream RSS MB | seconds | time limit |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for name, rows in idle.items():
            for r in rows:
                lines.append(
                    f"| {name} | {r['sessions']:,} | {('yes' if r['with_session_id'] else 'none') if 'with_session_id' in r else '–'} | {r['errors']} | {r['rss_before_mb']} | "
                    f"{r['rss_after_mb']} | {r['delta_mb']} | {fmt(r['kb_per_session'], 1)} | {fmt(r.get('upstream_rss_mb'), 1)} | "
                    f"{r['seconds']} | {'reached before ' + format(r.get('step', 0), ',') if r.get('time_limited') else ''} |"
                )
        idle_errors = [(n, r) for n, rows in idle.items() for r in rows if r.get("error_examples")]
        if idle_errors:
            lines += ["", "Idle-session errors (first examples):", ""]
            for n, r in idle_errors:
                lines.append(f"- {n} at {r['sessions']:,}: `{r['error_examples'][0][:200]}`")
    if report.get("setup"):
        lines += ["", "## Setup notes", ""]
        for note in report["setup"]:
            lines.append(f"- {note}")
    if FINDINGS_PATH.exists():
        findings = FINDINGS_PATH.read_text().strip().split("\n")
        if findings and findings[0].startswith("# "):
            findings = findings[1:]
        lines += ["", "## Findings (hand-written: `bench/findings.md`)", "", *findings]
    lines.append("")
    soak = kept_section()  # the soak (bench/soak.py) is a run of its own: its section stays as it is
    DOC_PATH.write_text("\n".join(lines) + soak)
