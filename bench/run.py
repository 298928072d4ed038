"""MCP Gateway benchmark: `make bench` (or `.venv/bin/python bench/run.py [--quick] [--targets ...] [--workloads ...]`).

Starts, on 127.0.0.1 only, the upstream fixture server (tests/fixtures/upstream_server.py), bulk fixtures serving
exactly 10, 1,000 and 10,000 tools, the gateway in front of them and ContextForge when installed (one worker
process per target), and the scale-out cells (`--targets scale`: tools_call on PostgreSQL + Redis with one and
two workers, uvicorn's own or separate processes behind nginx, and ContextForge with as many, all in front of
bench/fast_upstream.py, an upstream far cheaper per call than the fixture); drives every target with the same
asyncio/aiohttp load generator (bench/loadgen.py), interleaving targets within each workload and concurrency, for
--repeat rounds (each figure is the median over rounds), optionally profiles the gateway with py-spy (--profile),
measures idle-session memory, stops everything, and writes bench/results/<timestamp>.json and
docs/performance.md (with bench/findings.md, the hand-written findings, embedded). Every server process logs its
GC pauses (bench/gcprobe/sitecustomize.py).

The figure that holds on a shared machine is CPU milliseconds per request of the server processes
(utime+stime from /proc/PID/stat before and after the measured window, summed over the target's processes,
divided by the requests served). Latency percentiles come from raw samples (one per operation), never from a
corrected histogram.

This script is the command line, the rounds of interleaved cells and the results file; beside it in bench/:
config.py (paths, hosts, limits), processes.py (server processes, nginx), targets.py (setting up and tearing
down targets), fast_upstream.py (the scale-out cells' upstream), workloads.py, cells.py (measuring one cell;
idle sessions), profiles.py (py-spy) and report.py (the budget, before/after and docs/performance.md).
"""

# ruff: noqa: E501, S603, S607
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below, and loadgen
from cells import idle_sessions, measure_cell
from config import BULK_SIZES, BULK_SOURCE, DOC_PATH, HOST, PY_SPY, RESULTS_DIR, ROOT, SCALE_CONCURRENCY
from machine import machine_info, machine_load
from processes import (
    Server,
    nginx_binary,
    start_fast_upstream,
    start_rest_api,
    start_upstream,
    stop_servers_on_sigterm,
)
from profiles import PROFILE_CELLS, run_profiles
from report import write_markdown
from report_budget import before_after, budget
from report_common import fmt
from targets import (
    BASELINE_SUFFIX,
    CF_VENV,
    SCALE,
    TARGETS,
    LiveTarget,
    TargetSpec,
    pg_and_redis_available,
    setup_contextforge,
    setup_gateway,
    teardown,
    wants,
)
from workloads import WORKLOADS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="MCP Gateway benchmark (loopback only).")
    parser.add_argument(
        "--quick", action="store_true", help="short cells (0.5 s + 2 s), c=1 and 32, one round, 1,000 idle sessions"
    )
    parser.add_argument(
        "--targets",
        default="",
        help=f"comma-separated subset of: {', '.join(t.name for t in TARGETS)}; or the group `{SCALE}` (the "
        "scale-out cells: tools_call on PostgreSQL + Redis with 1 and 2 workers, nginx, ContextForge, the fast "
        "upstream), or `core` (every default target outside that group)",
    )
    parser.add_argument(
        "--workloads", default="", help=f"comma-separated subset of: {', '.join(w.name for w in WORKLOADS)}"
    )
    parser.add_argument(
        "--concurrency",
        default="",
        help="comma-separated, e.g. 1,32,256 (default 1,32,256; --quick 1,32; the scale-out cells "
        f"{','.join(map(str, SCALE_CONCURRENCY))} unless this is given)",
    )
    parser.add_argument("--duration", type=float, help="measured seconds per cell (default 3; --quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 0.5)")
    parser.add_argument(
        "--repeat", type=int, help="interleaved rounds; each figure is the median over rounds (default 2; --quick 1)"
    )
    parser.add_argument(
        "--idle-sessions", default="", help="comma-separated cumulative steps, e.g. 1000,10000; 0 to skip"
    )
    parser.add_argument(
        "--idle-time-limit",
        type=float,
        default=120.0,
        help="seconds per idle-session step for ContextForge (about 35 sessions/s); 0: none",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"also run py-spy ({PY_SPY.relative_to(ROOT)}, `make py-spy`) on the gateway during "
        + ", ".join(f"{t} {w} c={c}" for t, w, c in PROFILE_CELLS),
    )
    parser.add_argument(
        "--profile-targets",
        default="",
        help="comma-separated targets to profile instead (the same tools_call cells), e.g. gw-daphne-pg-gov-on",
    )
    parser.add_argument("--profile-duration", type=float, default=8.0, help="measured seconds of a profiled cell")
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run every selected gateway target from git REF (exported into a temporary directory outside "
        "the repository, same venv), as <target>-baseline interleaved with the working tree's; the report gets a "
        "'Before and after' table. Narrow it with --workloads (e.g. tools_call); baselines skip idle sessions",
    )
    parser.add_argument("--no-doc", action="store_true", help="write the JSON only, not docs/performance.md")
    parser.add_argument("--from-json", metavar="PATH", help="only re-render docs/performance.md from a results JSON")
    return parser.parse_args(argv)


@contextlib.contextmanager
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mcpgw-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


MEDIAN_KEYS = (
    "rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "server_cpu_ms_per_op",
    "upstream_cpu_ms_per_op",
    "loadgen_cpu_ms_per_op",
    "server_rss_mb",
    "upstream_rss_mb",
    "tail_in_gc",
    "proxy_cpu_ms_per_op",
)


def combine_rounds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell from its rounds: the median of each figure (None when no round has it); errors and operations
    summed; every round's own figures kept under "rounds"."""
    cell = dict(rows[0])
    for key in MEDIAN_KEYS:
        values = [r[key] for r in rows if r.get(key) is not None]
        cell[key] = round(statistics.median(values), 4) if values else None
    cell["ops"] = sum(r["ops"] for r in rows)
    cell["errors"] = sum(r["errors"] for r in rows)
    cell["error_examples"] = [e for r in rows for e in r["error_examples"]][:5]
    for key in ("server_gc", "upstream_gc", "worker_split"):
        cell[key] = rows[len(rows) // 2].get(key)
    cell["rounds"] = [
        {k: r.get(k) for k in ("round", "rps", "p50_ms", "p99_ms", "server_cpu_ms_per_op", "errors")} for r in rows
    ]
    return cell


def resolve_ref(ref: str) -> dict[str, str]:
    """The commit a git ref names, and its subject line."""
    r = subprocess.run(
        ["git", "log", "-1", "--format=%H%n%s", f"{ref}^{{commit}}", "--"], cwd=ROOT, capture_output=True, text=True
    )
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError(f"--baseline: git cannot resolve {ref!r}: {r.stderr.strip()}")
    commit, _, subject = r.stdout.strip().partition("\n")
    return {"ref": ref, "commit": commit, "subject": subject if len(subject) <= 120 else subject[:119] + "…"}


def export_ref(commit: str, dest: Path) -> Path:
    """The tree of `commit` as plain files in `dest` (git archive: no worktree to register or clean up, nothing
    written into the repository). It runs with this checkout's venv; bench/ itself always comes from the
    working tree."""
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", "--format=tar", commit], cwd=ROOT, stdout=subprocess.PIPE)
    assert archive.stdout is not None
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True)
    archive.stdout.close()
    if archive.wait() != 0 or untar.returncode != 0:
        raise RuntimeError(f"--baseline: could not export {commit}: {untar.stderr.decode(errors='replace')[-500:]}")
    return dest


def with_baselines(targets: list[TargetSpec], root: Path, info: dict[str, str]) -> list[TargetSpec]:
    """Each gateway target followed by its twin running from the baseline checkout."""
    out = []
    for spec in targets:
        out.append(spec)
        if spec.kind == "gateway":
            out.append(
                dataclasses.replace(
                    spec,
                    name=spec.name + BASELINE_SUFFIX,
                    description=f"{spec.description}; baseline: git {info['ref']} ({info['commit'][:10]})",
                    root=root,
                    baseline_of=spec.name,
                )
            )
    return out


# The target that is the upstream alone, for each upstream a target can stand in front of.
DIRECT_OF = {"up": "direct", "fast": "direct-fast"}


def select_targets(wanted: list[str] | None) -> list[TargetSpec]:
    """The targets named (or in a named group: `scale`, `core`), in TARGETS order; without names every default
    target, and the ContextForge ones when it is installed."""
    cf_installed = (CF_VENV / "bin" / "mcpgateway").exists()

    def default(t: TargetSpec) -> bool:
        return t.default or (t.kind == "contextforge" and cf_installed)

    if not wanted:
        return [t for t in TARGETS if default(t)]
    groups = {SCALE: [t for t in TARGETS if t.group == SCALE and default(t)]}
    groups["core"] = [t for t in TARGETS if t.group != SCALE and default(t)]
    known = {t.name for t in TARGETS}
    unknown = [w for w in wanted if w not in known and w not in groups]
    if unknown:
        raise ValueError(f"unknown targets: {', '.join(unknown)} (see --help)")
    chosen = {t.name for w in wanted for t in groups.get(w, [])} | {w for w in wanted if w in known}
    return [t for t in TARGETS if t.name in chosen]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        json_path = Path(args.from_json).resolve()
        report = json.loads(json_path.read_text())
        write_markdown(report, json_path)
        print(f"wrote {DOC_PATH.relative_to(ROOT)} from {json_path.relative_to(ROOT)}")
        return 0
    stop_servers_on_sigterm()
    warmup = args.warmup if args.warmup is not None else 0.5
    duration = args.duration if args.duration is not None else (2.0 if args.quick else 3.0)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 2)
    concurrency = [int(x) for x in args.concurrency.split(",") if x] or ([1, 32] if args.quick else [1, 32, 256])
    idle_steps = (
        [int(x) for x in args.idle_sessions.split(",") if x]
        if args.idle_sessions
        else ([1000] if args.quick else [1000, 10_000])
    )
    idle_steps = [s for s in idle_steps if s > 0]
    wanted = args.targets.split(",") if args.targets else None
    try:
        targets = select_targets(wanted)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    workloads = [w for w in WORKLOADS if not args.workloads or w.name in args.workloads.split(",")]
    if not targets or not workloads:
        print("no targets or workloads selected", file=sys.stderr)
        return 2
    if args.profile and not PY_SPY.exists():
        print(f"--profile needs py-spy at {PY_SPY.relative_to(ROOT)}: run `make py-spy`", file=sys.stderr)
        return 2
    baseline_info: dict[str, str] | None = None
    if args.baseline:
        try:
            baseline_info = resolve_ref(args.baseline)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2
        if not any(t.kind == "gateway" for t in targets):
            print("--baseline needs a gateway target (gw-...)", file=sys.stderr)
            return 2
    started = dt.datetime.now(dt.UTC)
    t_start = time.monotonic()
    setup_notes: list[str] = []
    load_notes = [f"before: {machine_load()}"]
    if any(t.db == "postgres" for t in targets):
        problem = pg_and_redis_available()
        if problem:
            setup_notes.append(f"skipped PostgreSQL targets: {problem}")
            print(setup_notes[-1], flush=True)
            targets = [t for t in targets if t.db != "postgres"]
    if any(t.front == "nginx" for t in targets) and nginx_binary() is None:
        setup_notes.append("skipped the targets behind nginx: nginx is not installed (`make system-deps`)")
        print(setup_notes[-1], flush=True)
        targets = [t for t in targets if t.front != "nginx"]
    # Targets that run none of the selected workloads are not set up (e.g. the scale-out ones, tools_call only).
    runs = {w.name for w in workloads}
    targets = [t for t in targets if wants(t, *runs)]

    def running(*names: str) -> list[TargetSpec]:
        return [t for t in targets if wants(t, *(n for n in names if n in runs))]

    # Only the upstreams in use: a gateway (or ContextForge) registers its upstream whatever it runs; `direct`
    # needs one only for the workloads it sends there.
    bulk_workloads = [w.name for w in workloads if w.endpoint in BULK_SIZES]
    bulk = bool(bulk_workloads and running(*bulk_workloads))
    fixture_workloads = [w.name for w in workloads if w.endpoint == "up"]
    in_use = {t.upstream for t in targets if t.kind != "direct" or t in running(*fixture_workloads)}

    live: list[LiveTarget] = []
    upstreams: dict[str, Server] = {}
    cells: list[dict[str, Any]] = []
    idle: dict[str, list[dict[str, Any]]] = {}
    profiles: list[dict[str, Any]] = []
    skipped: list[str] = []
    with state_dir() as state:
        try:
            if baseline_info is not None:
                base_root = export_ref(baseline_info["commit"], state / "baseline")
                print(
                    f"baseline: git {baseline_info['ref']} ({baseline_info['commit'][:10]}) in {base_root}", flush=True
                )
                targets = with_baselines(targets, base_root, baseline_info)
            print("starting upstream fixture servers", flush=True)
            if "up" in in_use:
                upstreams["up"] = start_upstream(state, "upstream")
            if "fast" in in_use:
                upstreams["fast"] = start_fast_upstream(state)
            if running(*(w.name for w in workloads if w.endpoint == "rest")):
                upstreams["api"] = start_rest_api(state)
            if bulk:
                needed = {w.endpoint for w in workloads if w.endpoint in BULK_SIZES}
                if any(t.kind != "direct" for t in running(*bulk_workloads)):
                    needed.add(BULK_SOURCE)
                for key in sorted(needed, key=lambda k: BULK_SIZES[k]):
                    upstreams[key] = start_upstream(state, f"upstream-{key}", BULK_SIZES[key])
            for spec in targets:
                print(f"setting up {spec.name}", flush=True)
                if spec.kind == "contextforge":
                    try:
                        live.append(setup_contextforge(spec, state, upstreams, bulk))
                    except Exception as exc:
                        setup_notes.append(f"skipped {spec.name}: {exc!r}"[:500])
                        print(setup_notes[-1], flush=True)
                elif spec.kind == "direct":
                    if spec.upstream == "up":
                        urls = {k: f"http://{HOST}:{s.port}/mcp" for k, s in upstreams.items() if k != "fast"}
                        live.append(LiveTarget(spec, None, urls, None, upstreams))
                    else:  # the workloads' "up" endpoint is that upstream
                        url = f"http://{HOST}:{upstreams[spec.upstream].port}/mcp"
                        live.append(
                            LiveTarget(spec, None, {"up": url}, None, upstreams, backends={"up": spec.upstream})
                        )
                elif spec.group == SCALE:  # one that fails (nginx, a worker) leaves the rest of the run alone
                    try:
                        live.append(setup_gateway(spec, state, upstreams, bulk))
                    except Exception as exc:
                        setup_notes.append(f"skipped {spec.name}: {exc!r}"[:1500])
                        print(setup_notes[-1], flush=True)
                else:
                    live.append(setup_gateway(spec, state, upstreams, bulk))
            rounds: dict[tuple[str, str, int], list[dict[str, Any]]] = {}

            def levels(spec: TargetSpec) -> list[int]:
                """The target's concurrencies: its own (the scale-out cells) unless --concurrency was given."""
                return concurrency if args.concurrency or spec.concurrency is None else list(spec.concurrency)

            all_levels = sorted({c for t in live for c in levels(t.spec)})
            for rnd in range(repeat):
                order = live if rnd % 2 == 0 else live[::-1]  # alternate the order so no target always goes first
                for workload in workloads:
                    for c in all_levels:
                        if workload.max_concurrency and c > workload.max_concurrency:
                            continue
                        # interleaved: every target once per (workload, c) before moving on
                        for target in order:
                            if c not in levels(target.spec):
                                continue
                            if target.spec.workloads is not None and workload.name not in target.spec.workloads:
                                continue
                            if target.spec.kind not in workload.kinds or workload.endpoint not in target.urls:
                                continue  # e.g. the REST-tool workload on a --baseline checkout without tool_add
                            if target.spec.max_concurrency and c > target.spec.max_concurrency:
                                if rnd == 0:
                                    skipped.append(f"{target.spec.name} / {workload.name} / c={c}")
                                continue
                            row = measure_cell(target, workload, c, warmup, duration)
                            row.update(target=target.spec.name, workload=workload.name, concurrency=c, round=rnd)
                            # the cell's yardstick: the upstream alone (`direct` for the fixture)
                            row.update(group=target.spec.group, direct=DIRECT_OF.get(target.spec.upstream))
                            rounds.setdefault((target.spec.name, workload.name, c), []).append(row)
                            print(
                                f"  [{rnd}] {workload.name:15} c={c:<4} {target.spec.name:26} {row['rps']:>9,.0f} req/s "
                                f"p50 {row['p50_ms']} p99 {row['p99_ms']} ms  err {row['errors']}  "
                                f"cpu {row['server_cpu_ms_per_op']} ms/op (upstream {row['upstream_cpu_ms_per_op']})",
                                flush=True,
                            )
                load_notes.append(f"after round {rnd + 1}: {machine_load()}")
            order_index = {(t.spec.name): i for i, t in enumerate(live)}
            for (_, _, _), rows in sorted(
                rounds.items(),
                key=lambda kv: (
                    [w.name for w in workloads].index(kv[0][1]),
                    kv[0][2],
                    order_index.get(kv[0][0], 0),
                ),
            ):
                cells.append(combine_rounds(rows))
            if args.profile:
                profiles = run_profiles(
                    live, state, warmup, args.profile_duration, tuple(filter(None, args.profile_targets.split(",")))
                )
            if idle_steps:
                for target in live:
                    if target.spec.baseline_of or not target.spec.idle:
                        continue
                    limit = (
                        args.idle_time_limit if target.spec.kind == "contextforge" and args.idle_time_limit else None
                    )
                    idle[target.spec.name] = idle_sessions(target, idle_steps, limit)
        finally:
            for target in live:
                teardown(target)
            for server in upstreams.values():
                server.stop()

    report = {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "elapsed_s": round(time.monotonic() - t_start, 1),
        "machine": machine_info(),
        "machine_load": load_notes,
        "config": {
            "warmup": warmup,
            "duration": duration,
            "concurrency": concurrency,
            "scale_concurrency": None if args.concurrency else list(SCALE_CONCURRENCY),
            "repeat": repeat,
            "quick": args.quick,
            "idle_steps": idle_steps,
            "idle_time_limit": args.idle_time_limit,
            "profile_duration": args.profile_duration if args.profile else None,
        },
        "targets": [
            {
                "name": t.spec.name,
                "description": t.spec.description,
                "kind": t.spec.kind,
                "server": t.spec.server,
                "group": t.spec.group,
                "workers": t.spec.workers,
                "front": t.spec.front,
            }
            for t in live
        ],
        "workloads": [{"name": w.name, "description": w.description} for w in workloads],
        "cells": cells,
        "skipped_cells": skipped,
        "idle_sessions": idle,
        "profiles": profiles,
        "setup": setup_notes,
        "baseline": baseline_info,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    json_path.write_text(json.dumps(report, indent=1))
    print(f"wrote {json_path.relative_to(ROOT)}")
    if not args.no_doc:
        write_markdown(report, json_path)
        print(f"wrote {DOC_PATH.relative_to(ROOT)}")
        for name, status, detail in budget(report):
            print(f"  budget: {name}: {status}  {detail}")
    for r in before_after(report):
        print(
            f"  before/after {r['workload']} c={r['concurrency']} {r['target']}: CPU {fmt(r['before_cpu'], 3)} -> "
            f"{fmt(r['after_cpu'], 3)} ms/op ({r['change_pct']:+.1f}%); rounds "
            f"{' '.join(fmt(x, 3) for x in r['before_rounds'])} / {' '.join(fmt(x, 3) for x in r['after_rounds'])}"
            if r["change_pct"] is not None
            else f"  before/after {r['workload']} c={r['concurrency']} {r['target']}: no operations"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
