"""MCP Gateway benchmark: `make bench` (or `.venv/bin/python bench/run.py [--quick] [--targets ...] [--workloads ...]`).

Starts, on 127.0.0.1 only, the upstream fixture server (tests/fixtures/upstream_server.py) and the gateway in
front of it (one worker process per target), drives every target with the same asyncio/aiohttp load generator
(bench/loadgen.py), interleaving targets within each workload and concurrency, stops everything, and writes
bench/results/<timestamp>.json and docs/performance.md.

The figure that holds on a shared machine is CPU milliseconds per request of the server process
(utime+stime from /proc/PID/stat before and after the measured window, divided by the requests served).
Latency percentiles come from raw samples (one per operation), never from a corrected histogram.
"""

# ruff: noqa: E501, RUF001, S310, S603, S607
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
DOC_PATH = ROOT / "docs" / "performance.md"
UPSTREAM_SCRIPT = ROOT / "tests" / "fixtures" / "upstream_server.py"
PYTHON = sys.executable
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
MANY_TOOLS = 10_000
MANY_TOOLS_PAGE = 100  # the gateway's default GATEWAY_MCP_PAGE_SIZE; the upstream pages the same way


# ------------------------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    health_path: str | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self._ready():
                return
            time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n{tail}")

    def _ready(self) -> bool:
        if self.health_path is None:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return True
            except OSError:
                return False
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}{self.health_path}", timeout=1) as r:
                return r.status < 500
        except Exception:
            return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def start_upstream(state: Path, name: str, many_tools: int = 0) -> Server:
    port = free_port()
    argv = [PYTHON, str(UPSTREAM_SCRIPT), "--transport", "streamable-http", "--port", str(port)]
    if many_tools:
        argv += ["--many-tools", str(many_tools), "--page-size", str(MANY_TOOLS_PAGE)]
    server = Server(name, argv, dict(os.environ), port, state / f"{name}.log")
    server.start()
    return server


# ------------------------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------------------------


@dataclass
class TargetSpec:
    """One thing to measure. kind "direct": the upstream fixture itself; "gateway": the gateway in front of it."""

    name: str
    kind: str  # "direct" | "gateway"
    server: str = "daphne"  # daphne | uvicorn
    db: str = "sqlite"  # sqlite (embedded default) | postgres (+ Redis: production settings)
    description: str = ""
    workloads: tuple[str, ...] | None = None  # None: every workload
    default: bool = True  # False: only when named in --targets (contextforge: also when installed)


TARGETS: list[TargetSpec] = [
    TargetSpec("direct", "direct", description="upstream fixture server alone (mcp SDK, uvicorn inside)"),
    TargetSpec(
        "gw-daphne-sqlite", "gateway", "daphne", "sqlite", "gateway, daphne, SQLite, no Redis (embedded default)"
    ),
    TargetSpec(
        "gw-daphne-pg", "gateway", "daphne", "postgres", "gateway, daphne, PostgreSQL + Redis (production settings)"
    ),
    TargetSpec("gw-uvicorn-sqlite", "gateway", "uvicorn", "sqlite", "gateway, uvicorn, SQLite, no Redis"),
    TargetSpec(
        "contextforge",
        "contextforge",
        description="IBM ContextForge 1.1.0 (comparison, one worker, SQLite, rate limit off), from .tools/contextforge",
        workloads=("tools_call", "tools_list"),
        default=False,
    ),
]


@dataclass
class LiveTarget:
    spec: TargetSpec
    token: str | None
    urls: dict[str, str]  # upstream key ("up", "many") -> MCP endpoint URL
    server: Server | None  # the gateway process (None for direct)
    upstreams: dict[str, Server]
    pg_db: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)  # upstream tool name -> the name this target serves

    def pid(self, upstream_key: str) -> int:
        return self.server.pid if self.server else self.upstreams[upstream_key].pid


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def setup_gateway(spec: TargetSpec, state: Path, upstreams: dict[str, Server], with_many: bool) -> LiveTarget:
    tdir = state / spec.name
    tdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG")}
    env.update(
        DJANGO_SETTINGS_MODULE="gateway_project.settings",
        SECRET_KEY="bench-secret-key-" + secrets.token_hex(16),
        DJANGO_SUPERUSER_USERNAME="benchadmin",
        DJANGO_SUPERUSER_PASSWORD="bench-admin-password-" + secrets.token_hex(8),
        LOG_LEVEL="WARNING",
    )
    pg_db = None
    if spec.db == "postgres":
        pg_db = f"mcpgw_bench_{os.getpid()}_{spec.name.replace('-', '_')}"
        _pg_admin(f'DROP DATABASE IF EXISTS "{pg_db}"')
        _pg_admin(f'CREATE DATABASE "{pg_db}"')
        env["DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + pg_db
        env["REDIS_URL"] = BENCH_REDIS_URL
    else:
        env["DATABASE_URL"] = f"sqlite:///{tdir / 'gateway.sqlite3'}"

    def manage(*args: str, timeout: float = 600) -> str:
        r = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        if r.returncode != 0:
            raise RuntimeError(
                f"{spec.name}: manage.py {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
            )
        return r.stdout

    target = LiveTarget(spec, None, {}, None, upstreams, pg_db)
    manage("migrate", "--noinput", "-v0")
    manage("ensure_superuser")
    target.token = manage("issue_token", "benchadmin", "--expires-in", "1d").strip().splitlines()[-1]
    manage("gateway_add", "up", "--url", f"http://{HOST}:{upstreams['up'].port}/mcp")
    manage("server_add", "bench", "--gateway", "up")
    if with_many:
        started = time.monotonic()
        manage("gateway_add", "many", "--url", f"http://{HOST}:{upstreams['many'].port}/mcp", "--timeout", "300")
        manage("server_add", "bulk", "--gateway", "many")
        print(f"  {spec.name}: registered {MANY_TOOLS} tools in {time.monotonic() - started:.1f} s", flush=True)
    port = free_port()
    if spec.server == "uvicorn":
        argv = [
            PYTHON,
            "-m",
            "uvicorn",
            "gateway_project.asgi:application",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    else:
        argv = [PYTHON, "-m", "daphne", "-b", HOST, "-p", str(port), "gateway_project.asgi:application"]
    target.server = Server(spec.name, argv, env, port, tdir / "server.log", health_path="/health")
    target.server.start()
    base = f"http://{HOST}:{port}"
    target.urls = {"up": f"{base}/servers/bench/mcp"}
    if with_many:
        target.urls["many"] = f"{base}/servers/bulk/mcp"
    return target


CF_VENV = ROOT / ".tools" / "contextforge"
CF_SECRET = "bench-jwt-secret-0123456789abcdefABCDEF-xyz!"


def setup_contextforge(spec: TargetSpec, state: Path, upstreams: dict[str, Server]) -> LiveTarget:
    """ContextForge in its own venv (see /work/shared/notes/contextforge-run.md); comparison only."""
    exe = CF_VENV / "bin" / "mcpgateway"
    if not exe.exists():
        raise RuntimeError(f"ContextForge is not installed at {CF_VENV} (pip install mcp-contextforge-gateway there)")
    tdir = state / spec.name
    tdir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        HOST=HOST,
        PORT=str(port),
        DATABASE_URL=f"sqlite:///{tdir / 'cf.db'}",
        JWT_SECRET_KEY=CF_SECRET,
        AUTH_ENCRYPTION_SECRET="bench-enc-secret-0123456789abcdefABCDEF-xyz!",
        BASIC_AUTH_USER="admin",
        BASIC_AUTH_PASSWORD="Bench-Basic-Passw0rd!2026",
        PLATFORM_ADMIN_EMAIL="admin@example.com",
        PLATFORM_ADMIN_PASSWORD="Bench-Admin-Passw0rd!2026",
        DEFAULT_USER_PASSWORD="Bench-User-Passw0rd!2026",
        MCPGATEWAY_UI_ENABLED="false",
        MCPGATEWAY_ADMIN_API_ENABLED="true",
        CACHE_TYPE="memory",
        SSRF_ALLOW_LOCALHOST="true",
        SSRF_ALLOW_PRIVATE_NETWORKS="true",
        RATE_LIMITING_ENABLED="false",
        LOG_LEVEL="ERROR",
        DISABLE_ACCESS_LOG="true",
    )
    server = Server(
        spec.name, [str(exe), "--host", HOST, "--port", str(port)], env, port, tdir / "server.log", "/health"
    )
    server.start(timeout=120)
    target = LiveTarget(spec, None, {}, server, upstreams)
    token = (
        subprocess.run(
            [
                str(CF_VENV / "bin" / "python"),
                "-m",
                "mcpgateway.utils.create_jwt_token",
                "--username",
                "admin@example.com",
                "--exp",
                "10080",
                "--secret",
                CF_SECRET,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    target.token = token
    base = f"http://{HOST}:{port}"

    def api(method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {token}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read() or b"null")

    api(
        "POST",
        "/gateways",
        {
            "name": "up",
            "url": f"http://{HOST}:{upstreams['up'].port}/mcp",
            "transport": "STREAMABLEHTTP",
            "visibility": "public",
        },
    )
    tools = api("GET", "/tools")
    tools = tools.get("items", tools) if isinstance(tools, dict) else tools
    by_original = {}
    for tool in tools:
        original = tool.get("originalName") or tool.get("original_name") or tool["name"]
        by_original[original] = tool
    target.aliases = {name: tool["name"] for name, tool in by_original.items()}
    created = api(
        "POST",
        "/servers",
        {"server": {"name": "bench", "associated_tools": [t["id"] for t in tools]}, "visibility": "public"},
    )
    target.urls = {"up": f"{base}/servers/{created['id']}/mcp"}
    return target


def teardown(target: LiveTarget) -> None:
    if target.server:
        target.server.stop()
    if target.pg_db:
        with contextlib.suppress(Exception):
            _pg_admin(f'DROP DATABASE IF EXISTS "{target.pg_db}" WITH (FORCE)')


# ------------------------------------------------------------------------------------------------------------
# Workloads: add one by appending an entry.
# ------------------------------------------------------------------------------------------------------------


async def op_tools_call_echo(client: loadgen.McpClient) -> None:
    name = client.aliases.get("echo", "echo")
    result = await client.request("tools/call", {"name": name, "arguments": {"message": "hi"}})
    if result.get("isError") or result["content"][0].get("text") != "hi":
        raise loadgen.McpError(f"unexpected echo result {str(result)[:200]}")


async def op_tools_list(client: loadgen.McpClient) -> None:
    result = await client.request("tools/list", {})
    if not result.get("tools"):
        raise loadgen.McpError("empty tools/list")


async def op_resources_read(client: loadgen.McpClient) -> None:
    result = await client.request("resources/read", {"uri": "test://static-text"})
    if not result.get("contents"):
        raise loadgen.McpError("empty resources/read")


async def op_initialize(client: loadgen.McpClient) -> None:
    await client.open()
    await client.close()


@dataclass
class Workload:
    name: str
    description: str
    operation: loadgen.Operation
    upstream: str = "up"  # which upstream (and gateway virtual server) it runs against
    session_per_op: bool = False  # True: each operation opens (and ends) its own session
    max_concurrency: int | None = None


WORKLOADS: list[Workload] = [
    Workload("tools_call", 'tools/call echo {"message":"hi"}', op_tools_call_echo),
    Workload("tools_list", "tools/list, first page (the fixture's own tools, one page)", op_tools_list),
    Workload("resources_read", "resources/read test://static-text", op_resources_read),
    Workload(
        "initialize",
        "session setup: initialize + notifications/initialized + DELETE (3 HTTP requests per op)",
        op_initialize,
        session_per_op=True,
    ),
    Workload(
        "tools_list_10k",
        f"tools/list, first page of {MANY_TOOLS:,} tools ({MANY_TOOLS_PAGE} per page)",
        op_tools_list,
        upstream="many",
        max_concurrency=32,
    ),
]


# ------------------------------------------------------------------------------------------------------------
# Running cells
# ------------------------------------------------------------------------------------------------------------


def measure_cell(
    target: LiveTarget, workload: Workload, concurrency: int, warmup: float, duration: float
) -> dict[str, Any]:
    gw_pid = target.server.pid if target.server else None
    up_pid = target.upstreams[workload.upstream].pid
    marks: dict[str, float] = {}

    def start() -> None:
        marks["up0"] = proc_cpu_seconds(up_pid)
        if gw_pid:
            marks["gw0"] = proc_cpu_seconds(gw_pid)

    def end() -> None:
        marks["up1"] = proc_cpu_seconds(up_pid)
        if gw_pid:
            marks["gw1"] = proc_cpu_seconds(gw_pid)

    result = asyncio.run(
        loadgen.run_cell(
            url=target.urls[workload.upstream],
            token=target.token,
            operation=workload.operation,
            concurrency=concurrency,
            warmup=warmup,
            duration=duration,
            session_per_op=workload.session_per_op,
            aliases=target.aliases,
            on_measure_start=start,
            on_measure_end=end,
        )
    )
    row = result.summary()

    def per_op(seconds: float) -> float | None:  # None when no operation completed in the window
        return round(seconds * 1000 / result.ops, 4) if result.ops else None

    row["upstream_cpu_ms_per_op"] = per_op(marks["up1"] - marks["up0"])
    row["upstream_rss_mb"] = proc_rss_mb(up_pid)
    if gw_pid:
        row["server_cpu_ms_per_op"] = per_op(marks["gw1"] - marks["gw0"])
        row["server_rss_mb"] = proc_rss_mb(gw_pid)
    else:
        row["server_cpu_ms_per_op"] = row["upstream_cpu_ms_per_op"]
        row["server_rss_mb"] = row["upstream_rss_mb"]
    return row


def idle_sessions(target: LiveTarget, steps: list[int]) -> list[dict[str, Any]]:
    """RSS of the serving process before and after opening idle sessions, cumulatively up to each step."""
    if target.server:
        # A fresh gateway process, so the figure is not inflated by the heap high-water mark of the load cells.
        target.server.stop()
        target.server.start()
        asyncio.run(
            loadgen.open_idle_sessions(target.urls["up"], target.token, 1, concurrency=1)
        )  # warm: snapshot, auth
    pid = target.pid("up")
    out = []
    base = proc_rss_mb(pid)
    opened_total = first = 0 if not target.server else 1
    for step in steps:
        t0 = time.monotonic()
        opened, errors = asyncio.run(loadgen.open_idle_sessions(target.urls["up"], target.token, step - opened_total))
        opened_total += opened
        time.sleep(0.5)
        rss = proc_rss_mb(pid)
        row = {
            "sessions": opened_total,
            "errors": errors,
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
    return out


# ------------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------------


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
    }


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
    measured = [c for c in cells if c["workload"] == "tools_call" and c["target"].startswith("gw-")]
    if measured:
        worst = {c["target"]: c for c in measured}
        parts = [f"{c['target']} c={c['concurrency']}: {fmt(c['server_cpu_ms_per_op'])} ms" for c in measured]

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
    idle = report.get("idle_sessions", {}).get(gw, [])
    big = [r for r in idle if r["sessions"] >= 10_000]
    if big:
        r = big[-1]
        rows.append(
            (
                "10,000 idle sessions ≤ 200 MB (gateway RSS)",
                "met" if r["rss_after_mb"] <= 200 and not r["errors"] else "not met",
                f"{gw}: {r['rss_after_mb']} MB RSS after {r['sessions']:,} sessions (+{r['delta_mb']} MB, {r['errors']} errors)",
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
    c256 = [c for c in cells if c["concurrency"] == 256 and c["target"].startswith("gw-")]
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
    return rows


def write_markdown(report: dict[str, Any], json_path: Path) -> None:
    m = report["machine"]
    cfg = report["config"]
    v = m["versions"]
    lines = [
        "# Performance",
        "",
        "Generated by `make bench` (`bench/run.py`); do not edit by hand, rerun it. "
        f"Raw results: `{json_path.relative_to(ROOT)}`.",
        "",
        "## How to reproduce",
        "",
        "```bash",
        "make bench                                   # full run (writes this file and bench/results/<timestamp>.json)",
        ".venv/bin/python bench/run.py --quick        # shorter cells, c=1 and 32 only",
        ".venv/bin/python bench/run.py --targets direct,gw-daphne-sqlite --workloads tools_call",
        "```",
        "",
        "Everything runs on 127.0.0.1 and stops by itself. The PostgreSQL target needs a server at "
        "`postgres://postgres@127.0.0.1:5432` (a database is created and dropped) and Redis at "
        "`redis://127.0.0.1:6379/1`; it is skipped with a message when they are not reachable. The `contextforge` "
        "comparison target runs when ContextForge is installed in its own venv (not a project dependency): "
        "`/root/.pyenv/versions/3.12.1/bin/python3 -m venv .tools/contextforge && "
        ".tools/contextforge/bin/pip install mcp-contextforge-gateway==1.1.0` (any Python 3.12 or 3.13 works); "
        "it runs `tools_call` and `tools_list` only, and it renames upstream tools (gateway prefix), so the harness maps `echo` to its name from `GET /tools`.",
        "",
        "## This run",
        "",
        f"- Date: {report['started']} (UTC), duration {report['elapsed_s']:.0f} s, git `{m['git_commit']}`",
        f"- Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['memory']} RAM, Linux {m['kernel']}",
        f"- Python {m['python']}; Django {v['django']}, channels {v['channels']}, daphne {v['daphne']} (Twisted {v['twisted']}), "
        f"uvicorn {v['uvicorn']} (uvloop {v['uvloop'] or 'not installed'}, httptools {v['httptools'] or 'not installed'}), "
        f"mcp {v['mcp']}, aiohttp {v['aiohttp']}, orjson {v['orjson']}, psycopg {v['psycopg']}, channels-redis {v['channels-redis']}",
        f"- Cells: {cfg['warmup']} s warm-up + {cfg['duration']} s measured each, concurrencies {cfg['concurrency']}, "
        f"targets interleaved within each workload and concurrency, {cfg['repeat']} round(s)",
        "- Each target is one worker process. The load generator (one asyncio process, aiohttp, one keep-alive "
        "connection and one MCP session per concurrent worker, protocol 2025-11-25) shares the machine with the "
        "servers, so requests/s and latency are bounded by the machine; CPU ms per request is the robust figure.",
        "",
        "Targets:",
        "",
    ]
    for spec in report["targets"]:
        lines.append(f"- `{spec['name']}`: {spec['description']}")
    lines += ["", "Workloads:", ""]
    for w in report["workloads"]:
        lines.append(f"- `{w['name']}`: {w['description']}")
    lines += [
        "",
        "## Budget (issue #4)",
        "",
        "Judged on `gw-daphne-sqlite` (the default deployment) unless the line says otherwise.",
        "",
        "| budget | status | measured |",
        "|---|---|---|",
    ]
    for name, status, detail in budget(report):
        lines.append(f"| {name} | **{status}** | {detail} |")
    lines += [
        "",
        "## Results",
        "",
        "`server CPU` is the CPU time of the serving process per operation: the gateway process for `gw-*` "
        "targets, the upstream itself for `direct`. `upstream CPU` is the upstream fixture's CPU per operation "
        "(for `direct` it is the same process). `RSS` is the serving process's VmRSS at the end of the cell. "
        "`vs direct` is this target's requests/s and p50 divided by `direct`'s in the same cell of this run, and "
        "the p50 latency it adds (negative: faster than direct, e.g. answered from the catalog snapshot without the upstream). `upstream busy` is the upstream fixture's CPU use during the cell in percent of one "
        "core (upstream CPU ms/op × req/s): near 100% the upstream (one process of the `mcp` SDK), not the gateway, "
        "bounds requests/s and latency, so compare the gateway by its own CPU ms/op there.",
        "",
        "| workload | c | target | req/s | p50 ms | p90 ms | p99 ms | errors | server CPU ms/op | upstream CPU ms/op | upstream busy | RSS MB | loadgen CPU ms/op | vs direct: req/s, p50, +p50 ms |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in report["cells"]:
        d = find(report["cells"], "direct", c["workload"], c["concurrency"])
        up_cpu = c["upstream_cpu_ms_per_op"]
        busy = f"{up_cpu * c['rps'] / 10:.0f}%" if up_cpu is not None else "–"
        ratio = ""
        if d and c["target"] != "direct" and d["rps"] and c["p50_ms"] is not None and d["p50_ms"]:
            ratio = f"{c['rps'] / d['rps']:.2f}×, {c['p50_ms'] / d['p50_ms']:.2f}×, {c['p50_ms'] - d['p50_ms']:+.2f}"
        lines.append(
            f"| {c['workload']} | {c['concurrency']} | {c['target']} | {fmt(c['rps'], 0)} | {fmt(c['p50_ms'])} | "
            f"{fmt(c['p90_ms'])} | {fmt(c['p99_ms'])} | {c['errors']} | {fmt(c['server_cpu_ms_per_op'], 3)} | "
            f"{fmt(c['upstream_cpu_ms_per_op'], 3)} | {busy} | {fmt(c['server_rss_mb'], 0)} | {fmt(c['loadgen_cpu_ms_per_op'], 3)} | {ratio} |"
        )
    empty = [c for c in report["cells"] if not c["ops"]]
    if empty:
        lines += [
            "",
            "Cells with no completed operation in the measured window (every worker still opening its session):",
            "",
        ]
        lines += [f"- {c['target']} / {c['workload']} / c={c['concurrency']}" for c in empty]
    errs = [c for c in report["cells"] if c["error_examples"]]
    if errs:
        lines += ["", "Errors seen (first examples):", ""]
        for c in errs:
            lines.append(f"- {c['target']} / {c['workload']} / c={c['concurrency']}: `{c['error_examples'][0][:200]}`")
    idle = report.get("idle_sessions", {})
    if idle:
        lines += [
            "",
            "## Idle sessions",
            "",
            "Sessions opened with `initialize` + `notifications/initialized` only (32 at a time) and left open; VmRSS of the serving "
            "process. Gateways are restarted first (a fresh process that has served one session, with the catalog of "
            "both upstreams loaded, including the 10,000 bulk tools when `tools_list_10k` ran); the direct upstream is measured "
            "as it is after all its cells (for gateways, the upstream fixture's RSS is shown too: the gateway may hold an upstream session per client session).",
            "",
            "| target | sessions open | errors | RSS before MB | RSS after MB | delta MB | KB per session | upstream RSS MB | seconds |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, rows in idle.items():
            for r in rows:
                lines.append(
                    f"| {name} | {r['sessions']:,} | {r['errors']} | {r['rss_before_mb']} | {r['rss_after_mb']} | {r['delta_mb']} | "
                    f"{fmt(r['kb_per_session'], 1)} | {fmt(r.get('upstream_rss_mb'), 1)} | {r['seconds']} |"
                )
    if report.get("setup"):
        lines += ["", "## Setup notes", ""]
        for note in report["setup"]:
            lines.append(f"- {note}")
    lines.append("")
    DOC_PATH.write_text("\n".join(lines))


# ------------------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="MCP Gateway benchmark (loopback only).")
    parser.add_argument(
        "--quick", action="store_true", help="short cells (0.5 s + 2 s), c=1 and 32, 1,000 idle sessions"
    )
    parser.add_argument(
        "--targets", default="", help=f"comma-separated subset of: {', '.join(t.name for t in TARGETS)}"
    )
    parser.add_argument(
        "--workloads", default="", help=f"comma-separated subset of: {', '.join(w.name for w in WORKLOADS)}"
    )
    parser.add_argument("--concurrency", default="", help="comma-separated, e.g. 1,32,256")
    parser.add_argument("--duration", type=float, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds (results keep the median-rps round)")
    parser.add_argument(
        "--idle-sessions", default="", help="comma-separated cumulative steps, e.g. 1000,10000; 0 to skip"
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


def pg_and_redis_available() -> str | None:
    try:
        _pg_admin("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}"
    try:
        import redis

        redis.Redis.from_url(BENCH_REDIS_URL, socket_timeout=2).ping()
    except Exception as exc:
        return f"Redis not reachable at {BENCH_REDIS_URL}: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        json_path = Path(args.from_json).resolve()
        report = json.loads(json_path.read_text())
        write_markdown(report, json_path)
        print(f"wrote {DOC_PATH.relative_to(ROOT)} from {json_path.relative_to(ROOT)}")
        return 0
    warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    duration = args.duration if args.duration is not None else (2.0 if args.quick else 5.0)
    concurrency = [int(x) for x in args.concurrency.split(",") if x] or ([1, 32] if args.quick else [1, 32, 256])
    idle_steps = (
        [int(x) for x in args.idle_sessions.split(",") if x]
        if args.idle_sessions
        else ([1000] if args.quick else [1000, 10_000])
    )
    idle_steps = [s for s in idle_steps if s > 0]
    wanted = args.targets.split(",") if args.targets else None
    cf_installed = (CF_VENV / "bin" / "mcpgateway").exists()
    targets = [
        t for t in TARGETS if (t.name in wanted if wanted else t.default or (t.kind == "contextforge" and cf_installed))
    ]
    workloads = [w for w in WORKLOADS if not args.workloads or w.name in args.workloads.split(",")]
    if not targets or not workloads:
        print("no targets or workloads selected", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.UTC)
    t_start = time.monotonic()
    setup_notes: list[str] = []
    with_many = any(w.upstream == "many" for w in workloads)
    if any(t.db == "postgres" for t in targets):
        problem = pg_and_redis_available()
        if problem:
            setup_notes.append(f"skipped PostgreSQL targets: {problem}")
            print(setup_notes[-1], flush=True)
            targets = [t for t in targets if t.db != "postgres"]

    live: list[LiveTarget] = []
    upstreams: dict[str, Server] = {}
    cells: list[dict[str, Any]] = []
    idle: dict[str, list[dict[str, Any]]] = {}
    with state_dir() as state:
        try:
            print("starting upstream fixture servers", flush=True)
            upstreams["up"] = start_upstream(state, "upstream")
            if with_many:
                upstreams["many"] = start_upstream(state, "upstream-many", MANY_TOOLS)
            for spec in targets:
                print(f"setting up {spec.name}", flush=True)
                if spec.kind == "contextforge":
                    try:
                        live.append(setup_contextforge(spec, state, upstreams))
                    except Exception as exc:
                        setup_notes.append(f"skipped {spec.name}: {exc!r}"[:500])
                        print(setup_notes[-1], flush=True)
                elif spec.kind == "direct":
                    urls = {k: f"http://{HOST}:{s.port}/mcp" for k, s in upstreams.items()}
                    live.append(LiveTarget(spec, None, urls, None, upstreams))
                else:
                    live.append(setup_gateway(spec, state, upstreams, with_many))
            rounds: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
            for rnd in range(args.repeat):
                for workload in workloads:
                    for c in concurrency:
                        if workload.max_concurrency and c > workload.max_concurrency:
                            continue
                        # interleaved: every target once per (workload, c) before moving on
                        for target in live:
                            if target.spec.workloads is not None and workload.name not in target.spec.workloads:
                                continue
                            row = measure_cell(target, workload, c, warmup, duration)
                            row.update(target=target.spec.name, workload=workload.name, concurrency=c, round=rnd)
                            rounds.setdefault((target.spec.name, workload.name, c), []).append(row)
                            print(
                                f"  [{rnd}] {workload.name:15} c={c:<4} {target.spec.name:18} {row['rps']:>9,.0f} req/s "
                                f"p50 {row['p50_ms']} p99 {row['p99_ms']} ms  err {row['errors']}  "
                                f"cpu {row['server_cpu_ms_per_op']} ms/op (upstream {row['upstream_cpu_ms_per_op']})",
                                flush=True,
                            )
            for rows in rounds.values():
                rows.sort(key=lambda r: r["rps"])
                cells.append(rows[len(rows) // 2])
            if idle_steps:
                for target in live:
                    if target.spec.kind != "contextforge":
                        idle[target.spec.name] = idle_sessions(target, idle_steps)
        finally:
            for target in live:
                teardown(target)
            for server in upstreams.values():
                server.stop()

    report = {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "elapsed_s": round(time.monotonic() - t_start, 1),
        "machine": machine_info(),
        "config": {
            "warmup": warmup,
            "duration": duration,
            "concurrency": concurrency,
            "repeat": args.repeat,
            "quick": args.quick,
            "idle_steps": idle_steps,
        },
        "targets": [{"name": t.spec.name, "description": t.spec.description} for t in live],
        "workloads": [{"name": w.name, "description": w.description} for w in workloads],
        "cells": cells,
        "idle_sessions": idle,
        "setup": setup_notes,
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
