"""The section "Scale-out" of docs/performance.md: workers, replicas behind nginx and ContextForge with as
many workers (issue #16)."""

# ruff: noqa: E501, RUF001
from __future__ import annotations

from typing import Any

from report_common import find, fmt
from targets import SCALE, is_baseline


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
