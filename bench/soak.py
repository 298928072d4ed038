"""MCP Gateway soak: `make soak` (or `.venv/bin/python bench/soak.py [--minutes N]`).

A bounded run (30 minutes unless SOAK_MINUTES or --minutes says otherwise) of mixed traffic over every
transport the gateway serves, with sessions opening and closing all the time (bench/soak_clients.py and a
module per transport beside it), against a gateway it starts on 127.0.0.1 with the upstream fixture behind
it (over HTTP, and a second one over stdio), as `make bench` starts them (bench/processes.py,
bench/targets.py). With DATABASE_URL (PostgreSQL) and REDIS_URL set, the gateway runs on a scratch database
made on that server and dropped at the end, with a Redis key prefix of the run's own (GATEWAY_REDIS_PREFIX),
whose keys are deleted at the end; otherwise on its own SQLite file and in-memory sessions.

Every --interval seconds it samples the gateway process: RSS, open file descriptors (/proc/PID/fd),
threads, CPU time, and from /metrics the asyncio tasks of its serving loop (mcpgw_asyncio_tasks), live
sessions, session objects held, open streams and stdio processes; and the Redis keys under its prefix.
Twice, after the warm-up and at the end, the traffic pauses for a quiet checkpoint (no session under way,
the sessions abandoned on purpose expired, the gateway settled), where what the gateway holds is compared
with tight tolerances; the series that follow the traffic rate are judged beyond what the traffic explains.
After the run: each series is judged flat or growing (bench/soak_report.py says how), every client has
closed its session and the idle timeout has passed, the store must be empty of sessions, and the errors
are counted by transport. Results go to bench/results/soak-<timestamp>.json and the "Soak" section of
docs/performance.md.
"""

# ruff: noqa: S311, S603
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _bench_settings_from_environment() -> str:
    """PostgreSQL + Redis when DATABASE_URL and REDIS_URL are set (the bench's own settings take them);
    "sqlite" otherwise. Before the bench's modules are imported: they read these once."""
    database, redis_url = os.environ.get("DATABASE_URL", ""), os.environ.get("REDIS_URL", "")
    if database.startswith(("postgres://", "postgresql://")) and redis_url:
        os.environ.setdefault("BENCH_PG_ADMIN_URL", database)  # the scratch database is made on that server
        os.environ.setdefault("BENCH_REDIS_URL", redis_url)
        return "postgres"
    return "sqlite"


DEFAULT_DB = _bench_settings_from_environment()
sys.path.insert(0, str(Path(__file__).resolve().parent))
from config import BENCH_REDIS_URL, DOC_PATH, HOST, PYTHON, RESULTS_DIR, ROOT, UPSTREAM_SCRIPT  # noqa: E402
from machine import machine_info, machine_load  # noqa: E402
from processes import start_upstream, stop_servers_on_sigterm  # noqa: E402
from soak_bridge import bridge_client  # noqa: E402
from soak_clients import Soak, http_session, learn_names  # noqa: E402
from soak_connected import SseSession, WebSocketSession, connected_client, hold_websocket  # noqa: E402
from soak_http import LegacyHttp, hold_get_stream, hold_listen, legacy_http_client, modern_http_client  # noqa: E402
from soak_probe import RedisKeys, sample  # noqa: E402
from soak_report import SERIES, analyse, load, write_section  # noqa: E402
from soak_rpc import rpc_client, trigger_changes  # noqa: E402
from targets import LiveTarget, TargetSpec, pg_and_redis_available, setup_gateway, teardown  # noqa: E402

# Clients of each kind running at once (times --scale); each runs one session after another.
WORKERS = {"http-legacy": 4, "http-modern": 3, "sse": 2, "websocket": 2, "rpc": 2, "stdio-bridge": 1}
STDIO_SERVER = "soak-stdio"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="MCP Gateway soak: mixed traffic over every transport (loopback).")
    parser.add_argument(
        "--minutes",
        type=float,
        default=float(os.environ.get("SOAK_MINUTES") or 30),
        help="minutes of traffic (default: SOAK_MINUTES, else 30); setup and the end checks add a few",
    )
    parser.add_argument("--interval", type=float, help="seconds between samples (default: 1/150 of the run, 2 to 10)")
    parser.add_argument(
        "--warmup",
        type=float,
        help="seconds of traffic before the series are judged (default: 10%% of the run, "
        "at least twice the idle timeout, at most 40%% of the run)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        help="the gateway's GATEWAY_SESSION_IDLE_TIMEOUT and GATEWAY_REQUEST_STATE_TTL for the run (default: "
        "1/8 of the run, 15 to 60 s), so abandoned sessions expire within it",
    )
    parser.add_argument("--server", choices=["daphne", "uvicorn"], default="daphne")
    parser.add_argument(
        "--db",
        choices=["sqlite", "postgres"],
        default=DEFAULT_DB,
        help="postgres: PostgreSQL + Redis (the default when DATABASE_URL and REDIS_URL are set)",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the number of clients of each kind")
    parser.add_argument("--think", type=float, default=0.15, help="mean pause between a session's operations (s)")
    parser.add_argument(
        "--abandon", type=float, default=0.2, help="share of session-era HTTP sessions left without DELETE"
    )
    parser.add_argument(
        "--trigger-every", type=float, default=30.0, help="seconds between upstream tool-list changes (0: none)"
    )
    parser.add_argument("--no-stdio-upstream", action="store_true", help="no second upstream over stdio")
    parser.add_argument("--seed", type=int, help="random seed of the traffic (default: random, recorded)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the run's directory (logs, SQLite file) and say where"
    )
    parser.add_argument("--no-doc", action="store_true", help="write the JSON only, not docs/performance.md")
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        action="append",
        help="only re-render the Soak section from a results JSON: its database's run (repeat it, one JSON per "
        "database, for both; a database not given keeps the run the section shows)",
    )
    parser.add_argument(
        "--doc", type=Path, default=DOC_PATH, help="the page whose Soak section is written (docs/performance.md)"
    )
    return parser.parse_args(argv)


# With the shared store, the logs of request streams live GATEWAY_SESSION_IDLE_TIMEOUT + 60 s after their last
# event (transports/protocol/shared_sessions.py, RedisLog) and notification claims 120 s: the Redis keys reach
# their steady state, and the last of them expire, only after that long.
STREAM_LOG_EXTRA = 60.0
CLAIM_TTL = 120.0


def settle_seconds(db: str, idle: float) -> float:
    """How long the gateway's state takes to reach its steady state under traffic, and to empty after it."""
    return max(idle, idle + STREAM_LOG_EXTRA, CLAIM_TTL) if db == "postgres" else idle


def timings(args: argparse.Namespace) -> tuple[float, float, float, float]:
    """(run, warm-up, idle timeout, sample interval) in seconds."""
    run = args.minutes * 60
    idle = args.idle_timeout or min(60.0, max(15.0, run / 8))
    interval = args.interval or min(10.0, max(2.0, run / 150))
    if args.warmup is not None:
        warmup = args.warmup
    else:
        settle = idle + STREAM_LOG_EXTRA if args.db == "postgres" else idle
        warmup = min(max(0.1 * run, 2 * idle, settle + 2 * interval), 0.4 * run)
    return run, warmup, idle, interval


QUIET_SECONDS = 8.0  # longer than the upstream fixture's keep-alive (uvicorn: 5 s), so idle upstream connections close


# -- the gateway -------------------------------------------------------------------------------------


def manage(target: LiveTarget, *args: str) -> str:
    assert target.server is not None
    r = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=target.server.env, capture_output=True, text=True, timeout=300
    )
    if r.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r.stdout


def add_stdio_upstream(target: LiveTarget) -> None:
    """A second upstream, the fixture over stdio (a process the gateway supervises), behind its own virtual
    server; the gateway restarts to read its catalog afresh (on SQLite no change notice reaches it)."""
    assert target.server is not None
    manage(
        target,
        "gateway_add",
        "stdio-up",
        "--transport",
        "stdio",
        "--command",
        PYTHON,
        f"--arg={UPSTREAM_SCRIPT}",
        "--arg=--transport",
        "--arg=stdio",
        "--cwd",
        str(ROOT),
        "--timeout",
        "60",
    )
    manage(target, "server_add", STDIO_SERVER, "--gateway", "stdio-up")
    target.server.stop()
    target.server.start()


# -- the run -----------------------------------------------------------------------------------------


async def drive(
    soak: Soak,
    args: argparse.Namespace,
    target: LiveTarget,
    token: str,
    redis_keys: RedisKeys | None,
    run: float,
    warmup: float,
    interval: float,
    idle: float,
) -> dict[str, Any]:
    """The traffic, the samples during it, and the samples and checks after it."""
    await learn_names(soak)
    t0 = time.monotonic()
    samples: list[dict[str, Any]] = []
    before = await asyncio.to_thread(sample, target, token, redis_keys, t0, "before")
    redis_before = await asyncio.to_thread(redis_keys.kinds) if redis_keys else None
    clients: list[asyncio.Task[None]] = []
    scale = max(args.scale, 0.01)
    for kind, count in WORKERS.items():
        for _ in range(max(1, round(count * scale))):
            if kind == "http-legacy":
                clients.append(asyncio.ensure_future(legacy_http_client(soak)))
            elif kind == "http-modern":
                clients.append(asyncio.ensure_future(modern_http_client(soak)))
            elif kind == "sse":
                clients.append(asyncio.ensure_future(connected_client(soak, SseSession)))
            elif kind == "websocket":
                clients.append(asyncio.ensure_future(connected_client(soak, WebSocketSession)))
            elif kind == "rpc":
                clients.append(asyncio.ensure_future(rpc_client(soak)))
            elif kind == "stdio-bridge":
                clients.append(asyncio.ensure_future(bridge_client(soak)))
    held = [hold_websocket(soak), hold_get_stream(soak), hold_listen(soak)]
    clients += [asyncio.ensure_future(c) for c in held]
    if args.trigger_every > 0:
        clients.append(asyncio.ensure_future(trigger_changes(soak, args.trigger_every)))
    print(f"  traffic for {run / 60:.1f} min: {len(clients)} clients; a sample every {interval:.0f} s", flush=True)
    started = time.monotonic()
    soak.go.set()

    async def at_rest(label: str) -> dict[str, Any]:
        """A quiet checkpoint: the short-lived clients finish their sessions and wait (each opens its next one
        after the pause, so none is left open to expire), the sessions abandoned on purpose outlive the idle
        timeout (on Redis, their stream logs theirs), the gateway settles, a sample is taken, the traffic
        resumes. The long-lived clients go on: the WebSocket calls every few seconds, the GET stream's
        keep-alives keep its session alive. What the gateway holds then is the same whatever the traffic
        rate was before, so two checkpoints compare like with like."""
        soak.go.clear()
        paused = time.monotonic()
        deadline = paused + 60
        while soak.active and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        quiet = time.monotonic()
        await asyncio.sleep(max(0.0, quiet + settle_seconds(args.db, idle) + 5 - time.monotonic()))
        await expire_abandoned(soak)
        await asyncio.sleep(QUIET_SECONDS)
        row = await asyncio.to_thread(sample, target, token, redis_keys, started, label)
        row["sessions_under_way"] = soak.active
        row["abandoned_expired"] = not soak.active
        row["paused_s"] = round(time.monotonic() - paused, 1)
        samples.append(row)
        soak.go.set()
        return row

    rest: dict[str, dict[str, Any]] = {}
    next_print = started + 60
    end = started + run
    while (now := time.monotonic()) < end:
        if "after_warmup" not in rest and now - started >= warmup:
            rest["after_warmup"] = await at_rest("rest-after-warmup")
            end += rest["after_warmup"]["paused_s"]  # the traffic asked for, not less
            continue
        row = await asyncio.to_thread(sample, target, token, redis_keys, started, "run")
        row["ops"] = sum(t.ops for t in soak.tallies.values())
        row["errors"] = sum(t.errors for t in soak.tallies.values())
        row["sessions_opened"] = sum(t.sessions_opened for t in soak.tallies.values())
        samples.append(row)
        if now >= next_print:
            next_print += 60
            print(
                f"  {row['t'] / 60:5.1f} min: {row['ops']:,} ops, {row['errors']} errors, "
                f"{row['sessions_opened']:,} sessions; RSS {row['rss_mb']} MB, {row['fds']} fds, "
                f"{row.get('tasks', '?')} tasks, {row.get('session_objects', '?')} session objects"
                + (f", {row.get('redis_keys', '?')} Redis keys" if redis_keys else ""),
                flush=True,
            )
        await asyncio.sleep(max(0.0, min(interval, end - time.monotonic())))
    rest["end"] = await at_rest("rest-at-end")
    ended = time.monotonic()
    soak.finish()
    print("  stopping the clients (each closes its session)", flush=True)
    _done, pending = await asyncio.wait(clients, timeout=60)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=10)
    crashed = [repr(t.exception())[:300] for t in clients if t.done() and not t.cancelled() and t.exception()]
    await asyncio.sleep(3)
    after_stop = await asyncio.to_thread(sample, target, token, redis_keys, started, "after-stop")
    still_live = sum(1 for at in soak.abandoned_at if at > time.monotonic() - idle)
    settle = settle_seconds(args.db, idle) + 5
    what = "the abandoned sessions and their Redis keys" if args.db == "postgres" else "the abandoned sessions"
    print(f"  waiting {settle:.0f} s for {what} to expire", flush=True)
    wait_until = time.monotonic() + settle
    while time.monotonic() < wait_until:
        await asyncio.sleep(min(interval, max(0.0, wait_until - time.monotonic())))
        samples.append(await asyncio.to_thread(sample, target, token, redis_keys, started, "drain"))
    probe = await expire_abandoned(soak)
    await asyncio.sleep(2)
    after_idle = await asyncio.to_thread(sample, target, token, redis_keys, started, "after-idle")
    redis_after = await asyncio.to_thread(redis_keys.kinds) if redis_keys else None
    return {
        "traffic_seconds": round(ended - started, 1),
        "samples": samples,
        "before": before,
        "after_stop": after_stop,
        "after_idle": after_idle,
        "at_rest": rest,
        "abandoned_still_live_at_stop": still_live,
        "redis_kinds_before": redis_before,
        "redis_kinds_after": redis_after,
        "client_crashes": crashed,
        "probe": probe.tallies["http-legacy"].summary() if "http-legacy" in probe.tallies else None,
    }


async def expire_abandoned(soak: Soak) -> Soak:
    """One more session, opened and deleted: the in-memory store drops expired sessions when it makes one.
    Its own tally (returned), so the run's counts stay the clients'."""
    probe = Soak(soak.base, soak.token, soak.servers[:1], soak.root, soak.python, 0, 0, random.Random(0))
    probe.stop.set()
    async with http_session() as http:
        client = LegacyHttp(probe, http, probe.servers[0], "2025-11-25")
        try:
            async with asyncio.timeout(30):
                await client.open()
                await client.delete()
            probe.tally("http-legacy").ok("probe")
        except (Exception, TimeoutError) as exc:
            probe.tally("http-legacy").error("probe", exc)
    return probe


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        paths = [Path(name).resolve() for name in args.from_json]
        runs = [(load(path), path) for path in paths]
        databases = [report["config"]["db"] for report, _ in runs]
        if len(set(databases)) < len(databases):
            print(f"--from-json: one run per database, not {', '.join(databases)}", file=sys.stderr)
            return 2
        write_section(runs, args.doc)
        print(f"rendered the Soak section of {args.doc} from {', '.join(str(path) for path in paths)}")
        return 0
    stop_servers_on_sigterm()
    run, warmup, idle, interval = timings(args)
    if warmup >= run:
        print(f"--warmup ({warmup:.0f} s) must be shorter than the run ({run:.0f} s)", file=sys.stderr)
        return 2
    if args.db == "postgres":
        problem = pg_and_redis_available()
        if problem:
            print(f"--db postgres: {problem}", file=sys.stderr)
            return 2
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    metrics_token = "soak-metrics-" + secrets.token_hex(16)
    spec = TargetSpec(
        f"soak-{args.server}-{args.db}",
        "gateway",
        args.server,
        args.db,
        description="the gateway under soak",
        env={
            "GATEWAY_METRICS": "true",
            "GATEWAY_METRICS_TOKEN": metrics_token,
            "GATEWAY_SESSION_IDLE_TIMEOUT": str(idle),
            "GATEWAY_REQUEST_STATE_TTL": str(idle),
            # The production defaults, not the bench's "unlimited": a store that fills up shows as refusals.
            "GATEWAY_MAX_SESSIONS": "10000",
            "GATEWAY_MAX_SESSIONS_PER_USER": "1000",
            "GATEWAY_HEALTH_INTERVAL": "15",
            # Keep-alives on idle streams a quarter of the (short) idle timeout apart, as the default's 15 s are
            # far below its 3600 s (a stream asks after its session at least twice per idle timeout anyway).
            "GATEWAY_SSE_KEEPALIVE": str(max(1.0, idle / 4)),
        },
    )
    print(
        f"Soak: {args.minutes:g} min of traffic on {spec.name} (warm-up {warmup:.0f} s, idle timeout {idle:.0f} s, "
        f"seed {seed}); {machine_load()}",
        flush=True,
    )
    info = machine_info()
    load_before = machine_load()
    wall = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="mcpgw-soak-"))
    upstream = target = None
    try:
        upstream = start_upstream(state, "up")
        target = setup_gateway(spec, state, {"up": upstream}, bulk=False)
        servers = ["bench"]
        if not args.no_stdio_upstream:
            add_stdio_upstream(target)
            servers.append(STDIO_SERVER)
        assert target.server is not None
        assert target.token is not None
        print(f"  gateway pid {target.server.pid} on port {target.server.port}; upstreams ready", flush=True)
        redis_keys = RedisKeys(BENCH_REDIS_URL, target.redis_prefix) if target.redis_prefix else None
        soak = Soak(
            base=f"http://{HOST}:{target.server.port}",
            token=target.token,
            servers=servers,
            root=str(ROOT),
            python=PYTHON,
            think=args.think,
            abandon=args.abandon,
            rng=random.Random(seed),
        )
        outcome = asyncio.run(drive(soak, args, target, metrics_token, redis_keys, run, warmup, interval, idle))
    finally:
        if target is not None:
            teardown(target)
        if upstream is not None:
            upstream.stop()
        logs = {
            name: log_summary(path)
            for name, path in (
                ("gateway", target and target.server and target.server.log_path),
                ("upstream", upstream and upstream.log_path),
            )
            if path
        }
        if args.keep:
            print(f"  kept {state}", flush=True)
        else:
            shutil.rmtree(state, ignore_errors=True)
    stamp = dt.datetime.now(dt.UTC)
    report: dict[str, Any] = {
        "kind": "soak",
        "date": stamp.isoformat(timespec="seconds"),
        "wall_seconds": round(time.monotonic() - wall, 1),
        "machine": info,
        "load_before": load_before,
        "load_after": machine_load(),
        "config": {
            "minutes": args.minutes,
            "server": args.server,
            "db": args.db,
            "warmup_s": warmup,
            "idle_timeout_s": idle,
            "redis_settle_s": idle + STREAM_LOG_EXTRA if args.db == "postgres" else None,
            "interval_s": interval,
            "scale": args.scale,
            "think_s": args.think,
            "abandon": args.abandon,
            "trigger_every_s": args.trigger_every,
            "stdio_upstream": not args.no_stdio_upstream,
            "workers": {k: max(1, round(v * max(args.scale, 0.01))) for k, v in WORKERS.items()},
            "seed": seed,
            "redis_prefix": target.redis_prefix if target else None,
            "redis_url": re.sub(r"//[^@/]*@", "//", BENCH_REDIS_URL) if args.db == "postgres" else None,  # no password
        },
        "transports": {kind: tally.summary() for kind, tally in sorted(soak.tallies.items())},
        **outcome,
        "logs": logs,
    }
    report["analysis"] = analyse(report)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS_DIR / f"soak-{stamp.strftime('%Y%m%dT%H%M%SZ')}.json"
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    if not args.no_doc:
        write_section([(report, json_path)], args.doc)
    print_summary(report, json_path, None if args.no_doc else args.doc)
    return 0 if report["analysis"]["passed"] else 1


def log_summary(path: Path) -> dict[str, Any]:
    """How many warnings, errors and tracebacks a process logged, and its last lines."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return {}
    return {
        "lines": len(lines),
        "warnings": sum(1 for line in lines if "WARNING" in line),
        "errors": sum(1 for line in lines if "ERROR" in line or "CRITICAL" in line),
        "tracebacks": sum(1 for line in lines if line.startswith("Traceback")),
        "first_problems": [
            line for line in lines if "ERROR" in line or "WARNING" in line or line.startswith("Traceback")
        ][:20],
        "tail": lines[-40:],
    }


def print_summary(report: dict[str, Any], json_path: Path, doc: Path | None) -> None:
    analysis = report["analysis"]
    print()
    for name, series in analysis["series"].items():
        label = SERIES[name][0]
        print(
            f"  {label:<32} {series['first']:>10} → {series['last']:<10} growth {series['growth']:+g} "
            + (
                f"beyond the traffic ({series['against']}) {series['growth_beyond_traffic']:+g} "
                if "against" in series
                else ""
            )
            + f"(tolerance {series['tolerance']:g}): {series['verdict']}"
        )
    rate = analysis.get("ops_per_minute") or {}
    if rate.get("first") is not None:
        print(f"  traffic: {rate['first']:g} ops/min in the first window, {rate['last']:g} in the last")
    for check in analysis["checks"]:
        mark = "-- " if check.get("judged") is False else ("ok " if check["ok"] else "NOT")
        print(f"  {mark} {check['name']}: {check['detail']}")
    for kind, t in report["transports"].items():
        print(f"  {kind:<13} {t['sessions_opened']:>6} sessions, {t['ops']:>7} ops, {t['errors']:>4} errors")
    print(f"\n{'PASSED' if analysis['passed'] else 'FAILED'}: {analysis['summary']}")
    shown = doc.relative_to(ROOT) if doc and doc.is_relative_to(ROOT) else doc
    print(f"Results: {json_path.relative_to(ROOT)}" + (f"; {shown}, section Soak" if shown else ""))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
