"""MCP Gateway benchmark: `make bench` (or `.venv/bin/python bench/run.py [--quick] [--targets ...] [--workloads ...]`).

Starts, on 127.0.0.1 only, the upstream fixture server (tests/fixtures/upstream_server.py), bulk fixtures serving
exactly 10, 1,000 and 10,000 tools, the gateway in front of them and ContextForge when installed (one worker
process per target), drives every target with the same asyncio/aiohttp load generator (bench/loadgen.py),
interleaving targets within each workload and concurrency, for --repeat rounds (each figure is the median over
rounds), optionally profiles the gateway with py-spy (--profile), measures idle-session memory, stops
everything, and writes bench/results/<timestamp>.json and docs/performance.md (with bench/findings.md, the
hand-written findings, embedded). Every server process logs its GC pauses (bench/gcprobe/sitecustomize.py).

The figure that holds on a shared machine is CPU milliseconds per request of the server process
(utime+stime from /proc/PID/stat before and after the measured window, divided by the requests served).
Latency percentiles come from raw samples (one per operation), never from a corrected histogram.
"""

# ruff: noqa: E501, RUF001, S310, S603, S607
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
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
# Bulk upstreams: the fixture serving exactly N tools (bulk_0000...) and nothing else of its own tools. `direct`
# talks to each; gateways and ContextForge register only the largest and serve the smaller sizes through virtual
# servers holding exactly its first N tools, so every target lists the same number of tools.
BULK_SIZES = {"b10": 10, "b1k": 1_000, "b10k": MANY_TOOLS}
BULK_SOURCE = "b10k"
GC_PROBE_DIR = ROOT / "bench" / "gcprobe"  # sitecustomize.py: logs GC pauses when BENCH_GC_LOG is set
PY_SPY = ROOT / ".tools" / "bin" / "py-spy"
MIN_OPS = 3  # a cell's window is stretched until this many operations completed (slow targets, long walks)...
MAX_CELL_SECONDS = 45.0  # ...up to this long
FINDINGS_PATH = ROOT / "bench" / "findings.md"  # hand-written findings, embedded in docs/performance.md


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
    cwd: Path = ROOT  # the checkout it runs from (a --baseline gateway runs from the baseline's)

    @property
    def gc_log(self) -> Path:
        return self.log_path.with_suffix(".gc.log")

    def start(self, timeout: float = 60.0) -> None:
        env = dict(self.env)
        env["BENCH_GC_LOG"] = str(self.gc_log)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(GC_PROBE_DIR), env.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=env,
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


def gc_pauses(server: Server, t0: float, t1: float) -> list[tuple[float, int, float]]:
    """(end time, generation, pause ms) of the collections logged by the process between t0 and t1."""
    out = []
    with contextlib.suppress(OSError), open(server.gc_log) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                end, gen, ms = float(parts[0]), int(parts[1]), float(parts[2])
                if t0 <= end and end - ms / 1000 <= t1:
                    out.append((end, gen, ms))
    return out


def start_upstream(state: Path, name: str, many_tools: int = 0) -> Server:
    port = free_port()
    argv = [PYTHON, str(UPSTREAM_SCRIPT), "--transport", "streamable-http", "--port", str(port)]
    if many_tools:
        argv += ["--many-tools", str(many_tools), "--page-size", str(MANY_TOOLS_PAGE), "--bulk-only"]
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
    kind: str  # "direct" | "gateway" | "contextforge"
    server: str = "daphne"  # daphne | uvicorn
    db: str = "sqlite"  # sqlite (embedded default) | postgres (+ Redis: production settings)
    description: str = ""
    workloads: tuple[str, ...] | None = None  # None: every workload
    default: bool = True  # False: only when named in --targets (contextforge: also when installed)
    max_concurrency: int | None = None  # cells above it are not run for this target (said in the report)
    root: Path = ROOT  # the checkout a gateway runs from: this working tree, or a --baseline ref's export
    baseline_of: str | None = None  # for a --baseline copy: the name of the target it is the baseline of


BASELINE_SUFFIX = "-baseline"


def is_baseline(name: str) -> bool:
    return name.endswith(BASELINE_SUFFIX)


CF_MAX_CONCURRENCY = 32

TARGETS: list[TargetSpec] = [
    TargetSpec("direct", "direct", description="upstream fixture server alone (mcp SDK, uvicorn inside)"),
    TargetSpec(
        "gw-daphne-sqlite", "gateway", "daphne", "sqlite", "gateway, daphne, SQLite, no Redis (embedded default)"
    ),  # daphne as `make run` serves it: gateway_project.daphne_server (see daphne_module())
    TargetSpec(
        "gw-daphne-pg", "gateway", "daphne", "postgres", "gateway, daphne, PostgreSQL + Redis (production settings)"
    ),
    TargetSpec("gw-uvicorn-sqlite", "gateway", "uvicorn", "sqlite", "gateway, uvicorn, SQLite, no Redis"),
    TargetSpec(
        "contextforge",
        "contextforge",
        description="IBM ContextForge 1.1.0 (comparison, one worker, SQLite, rate limit off, its default stateless "
        "Streamable HTTP), from .tools/contextforge",
        default=False,
        max_concurrency=CF_MAX_CONCURRENCY,
    ),
]


@dataclass
class LiveTarget:
    spec: TargetSpec
    token: str | None
    urls: dict[str, str]  # endpoint key ("up", "b10", "b1k", "b10k") -> MCP endpoint URL
    server: Server | None  # the gateway process (None for direct)
    upstreams: dict[str, Server]
    pg_db: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)  # upstream tool name -> the name this target serves
    backends: dict[str, str] = field(default_factory=dict)  # endpoint key -> the upstream behind it

    def upstream(self, endpoint: str) -> Server:
        return self.upstreams[self.backends.get(endpoint, endpoint)]

    def pid(self, endpoint: str) -> int:
        return self.server.pid if self.server else self.upstream(endpoint).pid


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def bulk_names(count: int) -> list[str]:
    """The fixture's bulk tool names, in its (and the gateway's name) order."""
    return [f"bulk_{i:04d}" for i in range(count)]


def setup_gateway(spec: TargetSpec, state: Path, upstreams: dict[str, Server], bulk: bool) -> LiveTarget:
    tdir = state / spec.name
    tdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG")}
    env.update(
        DJANGO_SETTINGS_MODULE="gateway_project.settings",
        SECRET_KEY="bench-secret-key-" + secrets.token_hex(16),
        DJANGO_SUPERUSER_USERNAME="benchadmin",
        DJANGO_SUPERUSER_PASSWORD="bench-admin-password-" + secrets.token_hex(8),
        LOG_LEVEL="WARNING",
        # The idle-sessions and initialize workloads open many thousands of sessions as one user.
        GATEWAY_MAX_SESSIONS_PER_USER="0",
        GATEWAY_MAX_SESSIONS="1000000",
    )
    pg_db = None
    if spec.db == "postgres":
        pg_db = f"mcpgw_bench_{os.getpid()}_{spec.name.replace('-', '_')}"
        _pg_admin(f'DROP DATABASE IF EXISTS "{pg_db}"')
        _pg_admin(f'CREATE DATABASE "{pg_db}"')
        env["DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + pg_db
        env["REDIS_URL"] = BENCH_REDIS_URL
        import redis

        redis.Redis.from_url(BENCH_REDIS_URL).flushdb()  # the bench's own database: sessions of an earlier run go
    else:
        env["DATABASE_URL"] = f"sqlite:///{tdir / 'gateway.sqlite3'}"

    def manage(*args: str, timeout: float = 600) -> str:
        r = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=spec.root, env=env, capture_output=True, text=True, timeout=timeout
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
    servers = {"up": "bench"}
    if bulk:
        started = time.monotonic()
        source = upstreams[BULK_SOURCE]
        manage("gateway_add", "many", "--url", f"http://{HOST}:{source.port}/mcp", "--timeout", "300")
        for key, count in BULK_SIZES.items():
            if count == MANY_TOOLS:
                manage("server_add", f"bulk-{key}", "--gateway", "many")
            else:
                manage("server_add", f"bulk-{key}", *(a for name in bulk_names(count) for a in ("--tool", name)))
            servers[key] = f"bulk-{key}"
            target.backends[key] = BULK_SOURCE
        print(
            f"  {spec.name}: registered {MANY_TOOLS:,} tools and the bulk servers in {time.monotonic() - started:.1f} s",
            flush=True,
        )
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
        argv = [PYTHON, "-m", daphne_module(spec.root), "-b", HOST, "-p", str(port), "gateway_project.asgi:application"]
    target.server = Server(spec.name, argv, env, port, tdir / "server.log", health_path="/health", cwd=spec.root)
    target.server.start()
    base = f"http://{HOST}:{port}"
    target.urls = {key: f"{base}/servers/{name}/mcp" for key, name in servers.items()}
    return target


def daphne_module(root: Path) -> str:
    """How `make run` serves a checkout with daphne: through `gateway_project.daphne_server` (daphne without
    its per-request access log and Twisted's unused form parsing) where the checkout has it, else plain daphne
    (what `make run` ran before it; a --baseline ref may be that old)."""
    return "gateway_project.daphne_server" if (root / "gateway_project" / "daphne_server.py").exists() else "daphne"


CF_VENV = ROOT / ".tools" / "contextforge"
CF_SECRET = "bench-jwt-secret-0123456789abcdefABCDEF-xyz!"


def setup_contextforge(spec: TargetSpec, state: Path, upstreams: dict[str, Server], bulk: bool) -> LiveTarget:
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
    try:
        _configure_contextforge(target, env, bulk)
    except BaseException:
        server.stop()
        raise
    return target


def _configure_contextforge(target: LiveTarget, env: dict[str, str], bulk: bool) -> None:
    """Issue a token, register the upstreams and create the virtual servers the workloads use."""
    spec, upstreams, port = target.spec, target.upstreams, target.server.port if target.server else 0
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
        with urllib.request.urlopen(request, timeout=900) as response:
            return json.loads(response.read() or b"null")

    def items(answer: Any) -> list[dict[str, Any]]:
        return answer.get("items", answer) if isinstance(answer, dict) else answer

    def register(name: str, upstream: Server) -> str:
        body = {
            "name": name,
            "url": f"http://{HOST}:{upstream.port}/mcp",
            "transport": "STREAMABLEHTTP",
            "visibility": "public",
        }
        return str(api("POST", "/gateways", body)["id"])

    def create_server(name: str, tool_ids: list[str], resource_ids: list[str] | None = None) -> str:
        server: dict[str, Any] = {"name": name, "associated_tools": tool_ids}
        if resource_ids:
            server["associated_resources"] = resource_ids
        created = api("POST", "/servers", {"server": server, "visibility": "public"})
        return f"{base}/servers/{created['id']}/mcp"

    def original(tool: dict[str, Any]) -> str:
        return str(tool.get("originalName") or tool.get("original_name") or tool["name"])

    up_id = register("up", upstreams["up"])
    bulk_id = None
    if bulk:
        started = time.monotonic()
        bulk_id = register("many", upstreams[BULK_SOURCE])
        print(f"  {spec.name}: registered {MANY_TOOLS:,} tools in {time.monotonic() - started:.1f} s", flush=True)
    tools = items(api("GET", "/tools?limit=0"))  # 0: all (the default is a page of 50)
    up_tools = [t for t in tools if str(t.get("gatewayId")) == up_id]
    target.aliases = {original(t): t["name"] for t in up_tools}
    up_resources = [r["id"] for r in items(api("GET", "/resources?limit=0")) if str(r.get("gatewayId")) == up_id]
    target.urls = {"up": create_server("bench", [t["id"] for t in up_tools], up_resources)}
    if bulk_id is not None:
        started = time.monotonic()
        by_name = {original(t): t["id"] for t in tools if str(t.get("gatewayId")) == bulk_id}
        for key, count in BULK_SIZES.items():
            ids = [by_name[name] for name in bulk_names(count) if name in by_name]
            if len(ids) != count:
                raise RuntimeError(f"{spec.name}: {len(ids)} of the {count} bulk tools registered")
            target.urls[key] = create_server(f"bulk-{key}", ids)
            target.backends[key] = BULK_SOURCE
        print(f"  {spec.name}: created the bulk servers in {time.monotonic() - started:.1f} s", flush=True)


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


def op_tools_list_first(count: int) -> loadgen.Operation:
    """tools/list without a cursor; the page must hold min(count, page size) tools."""
    expected = min(count, MANY_TOOLS_PAGE)

    async def op(client: loadgen.McpClient) -> None:
        result = await client.request("tools/list", {})
        if len(result.get("tools") or ()) != expected:
            raise loadgen.McpError(f"tools/list first page: {len(result.get('tools') or ())} tools, not {expected}")

    return op


def op_tools_walk(count: int) -> loadgen.Operation:
    """Every page of tools/list, following nextCursor; one operation is the whole walk of `count` tools."""

    async def op(client: loadgen.McpClient) -> None:
        seen = 0
        params: dict[str, Any] = {}
        for _ in range(count // 10 + 10):  # a bound, in case a server keeps returning a cursor
            result = await client.request("tools/list", params)
            seen += len(result.get("tools") or ())
            cursor = result.get("nextCursor")
            if not cursor:
                break
            params = {"cursor": cursor}
        if seen != count:
            raise loadgen.McpError(f"tools/list walk: {seen} tools, not {count}")

    return op


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
    endpoint: str = "up"  # "up": the fixture (gateway server `bench`); b10/b1k/b10k: the bulk upstream of that size
    session_per_op: bool = False  # True: each operation opens (and ends) its own session
    max_concurrency: int | None = None


WORKLOADS: list[Workload] = [
    Workload("tools_call", 'tools/call echo {"message":"hi"}', op_tools_call_echo),
    Workload("tools_list_10", "tools/list, first page of 10 tools (one page)", op_tools_list_first(10), "b10"),
    Workload(
        "tools_list_1k",
        f"tools/list, first page of 1,000 tools ({MANY_TOOLS_PAGE} per page)",
        op_tools_list_first(1_000),
        "b1k",
        max_concurrency=32,
    ),
    Workload(
        "tools_list_10k",
        f"tools/list, first page of {MANY_TOOLS:,} tools ({MANY_TOOLS_PAGE} per page)",
        op_tools_list_first(MANY_TOOLS),
        "b10k",
        max_concurrency=32,
    ),
    Workload(
        "tools_walk_1k",
        f"tools/list full walk of 1,000 tools: every page by nextCursor ({1_000 // MANY_TOOLS_PAGE} requests per op)",
        op_tools_walk(1_000),
        "b1k",
        max_concurrency=32,
    ),
    Workload(
        "tools_walk_10k",
        f"tools/list full walk of {MANY_TOOLS:,} tools ({MANY_TOOLS // MANY_TOOLS_PAGE} requests per op; c=1 only: "
        "one walk through the direct upstream takes about 0.3 s of its CPU)",
        op_tools_walk(MANY_TOOLS),
        "b10k",
        max_concurrency=1,
    ),
    Workload("resources_read", "resources/read test://static-text", op_resources_read),
    Workload(
        "initialize",
        "session setup: initialize + notifications/initialized + DELETE (3 HTTP requests per op)",
        op_initialize,
        session_per_op=True,
    ),
]


# ------------------------------------------------------------------------------------------------------------
# Running cells
# ------------------------------------------------------------------------------------------------------------


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
    gw_pid = target.server.pid if target.server else None
    up_pid = upstream.pid
    marks: dict[str, float] = {}
    spy: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        marks["t0"] = time.time()
        marks["up0"] = proc_cpu_seconds(up_pid)
        if gw_pid:
            marks["gw0"] = proc_cpu_seconds(gw_pid)
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
        if gw_pid:
            marks["gw1"] = proc_cpu_seconds(gw_pid)
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
    if gw_pid:
        row["server_cpu_ms_per_op"] = per_op(marks["gw1"] - marks["gw0"])
        row["server_rss_mb"] = proc_rss_mb(gw_pid)
    else:
        row["server_cpu_ms_per_op"] = row["upstream_cpu_ms_per_op"]
        row["server_rss_mb"] = row["upstream_rss_mb"]
    window = marks["t1"] - marks["t0"]
    up_pauses = gc_pauses(upstream, marks["t0"], marks["t1"])
    row["upstream_gc"] = gc_summary(up_pauses, window)
    all_pauses = list(up_pauses)
    if target.server:
        server_pauses = gc_pauses(target.server, marks["t0"], marks["t1"])
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


# ------------------------------------------------------------------------------------------------------------
# Profiles (--profile): py-spy on the serving process during chosen cells
# ------------------------------------------------------------------------------------------------------------

PROFILE_CELLS = (("gw-daphne-sqlite", "tools_call", 1), ("gw-daphne-sqlite", "tools_call", 32))

# Where a leaf frame's time goes: by function for the socket system calls, else by its file (first match wins).
LEAF_FUNCTIONS: dict[str, str] = {
    "untilConcludes (twisted/python/util.py)": "socket send() to the client (Twisted writeSomeData; kernel time)",
    "_SelectorSocketTransport.write (asyncio/selector_events.py)": "socket send() to the upstream (asyncio transport; kernel time)",
}
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("JSON (orjson/json)", ("/orjson", "/json/")),
    (
        "upstream client (transports/protocol/upstream, aiohttp, yarl, multidict)",
        ("/transports/protocol/upstream/", "/aiohttp/", "/yarl/", "/multidict/", "/aiohappyeyeballs/", "/propcache/"),
    ),
    (
        "daphne + Twisted (HTTP parsing, reactor, access log)",
        ("/twisted/", "/daphne/", "/zope/", "/autobahn/", "/txaio/", "/incremental/", "/email/"),
    ),
    ("Channels + asgiref (ASGI routing, consumer plumbing)", ("/channels/", "/asgiref/")),
    ("Django", ("/django/",)),
    ("auth crypto (PyJWT, cryptography)", ("/jwt/", "/cryptography/")),
    (
        "the gateway's own code (endpoint, protocol core, auth, catalog)",
        ("/transports/", "/registry/", "/gateway_project/", "/federation/"),
    ),
    ("asyncio (event loop, tasks, futures, selectors)", ("/asyncio/", "/selectors.py", "/contextvars", "/concurrent/")),
]
# Leaves that are a wait, not work: py-spy cannot always tell a thread blocked in epoll from one running.
WAITING = ("EpollSelector.select (selectors.py)",)


def _frame_file(frame: str) -> str:
    """'func (path)' -> '/path' (py-spy gives paths relative to site-packages or the stdlib)."""
    if frame.endswith(")") and " (" in frame:
        return "/" + frame.rsplit(" (", 1)[1][:-1].lstrip("/")
    return frame


def short_frame(frame: str) -> str:
    if frame.endswith(")") and " (" in frame:
        func, path = frame[:-1].rsplit(" (", 1)
        for marker in ("site-packages/", "/lib/python3.12/", str(ROOT) + "/"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        return f"{func} ({path})"
    return frame


def categorize(leaf: str) -> str:
    if leaf in LEAF_FUNCTIONS:
        return LEAF_FUNCTIONS[leaf]
    path = _frame_file(leaf)
    for name, needles in CATEGORIES:
        if any(n in path for n in needles):
            return name
    return "other (stdlib and the rest)"


def parse_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """py-spy raw (collapsed) stacks -> own and total share per function, own share per category."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    cats: dict[str, int] = {}
    samples = waiting = 0
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [short_frame(fr) for fr in stack.split(";") if fr and not fr.startswith("process ")]
            frames = [fr for fr in frames if not fr.startswith("thread ")]
            if not frames:
                continue
            leaf = frames[-1]
            if leaf in WAITING:
                waiting += count
                continue
            samples += count
            own[leaf] = own.get(leaf, 0) + count
            for fr in set(frames):
                total[fr] = total.get(fr, 0) + count
            cat = categorize(leaf)
            cats[cat] = cats.get(cat, 0) + count
    if not samples:
        return {"samples": 0, "waiting": waiting}

    def pct(n: int) -> float:
        return round(100 * n / samples, 1)

    return {
        "samples": samples,
        "waiting": waiting,
        "top_own": [(fr, pct(n), pct(total[fr])) for fr, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]],
        "top_total": [
            (fr, pct(own.get(fr, 0)), pct(n)) for fr, n in sorted(total.items(), key=lambda kv: -kv[1])[:top]
        ],
        "categories": [(name, pct(n)) for name, n in sorted(cats.items(), key=lambda kv: -kv[1])],
    }


def run_profiles(live: list[LiveTarget], state: Path, warmup: float, duration: float) -> list[dict[str, Any]]:
    """Each PROFILE_CELLS cell once more, with py-spy attached (not part of the results' medians)."""
    out = []
    by_name = {t.spec.name: t for t in live}
    workloads = {w.name: w for w in WORKLOADS}
    for target_name, workload_name, concurrency in PROFILE_CELLS:
        target = by_name.get(target_name)
        if target is None:
            continue
        raw = state / f"profile-{target_name}-{workload_name}-c{concurrency}.txt"
        row = measure_cell(target, workloads[workload_name], concurrency, warmup, duration, profile_out=raw)
        profile = parse_profile(raw)
        out.append(
            {
                "target": target_name,
                "workload": workload_name,
                "concurrency": concurrency,
                "duration": duration,
                "cell": {k: row[k] for k in ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_op", "ops")},
                **profile,
            }
        )
        print(
            f"  profile {target_name} {workload_name} c={concurrency}: {profile.get('samples', 0)} samples, "
            f"cpu {row['server_cpu_ms_per_op']} ms/op",
            flush=True,
        )
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
        if c["workload"] == "tools_call" and c["target"].startswith("gw-") and not is_baseline(c["target"])
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
        "make bench-compare                           # tools_call CPU per call of HEAD (the baseline) and the working tree, same run",
        "make bench-compare BASELINE=main BENCH_ARGS='--repeat 5'   # any git ref; BENCH_ARGS are added",
        ".venv/bin/python bench/run.py --baseline HEAD~3 --workloads tools_call,tools_list_10 --idle-sessions 0",
        ".venv/bin/python bench/run.py --from-json bench/results/<timestamp>.json   # re-render this file",
        "```",
        "",
        "Everything runs on 127.0.0.1 and stops by itself. The PostgreSQL target needs a server at "
        "`postgres://postgres@127.0.0.1:5432` (a database is created and dropped) and Redis at "
        "`redis://127.0.0.1:6379/1`; it is skipped with a message when they are not reachable. The `contextforge` "
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
        "## This run",
        "",
        f"- Date: {report['started']} (UTC), duration {report['elapsed_s']:.0f} s, git `{m['git_commit']}`"
        + (
            f" plus uncommitted changes to {len(m['git_modified'])} tracked file(s): "
            + ", ".join(f"`{f}`" for f in m["git_modified"][:12])
            if m.get("git_modified")
            else ""
        ),
        f"- Comparison and profiler: ContextForge {v.get('contextforge') or 'not installed'}, py-spy {v.get('py-spy') or 'not installed'}",
        f"- Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['memory']} RAM, Linux {m['kernel']}",
        f"- Python {m['python']}; Django {v['django']}, channels {v['channels']}, daphne {v['daphne']} (Twisted {v['twisted']}), "
        f"uvicorn {v['uvicorn']} (uvloop {v['uvloop'] or 'not installed'}, httptools {v['httptools'] or 'not installed'}), "
        f"mcp {v['mcp']}, aiohttp {v['aiohttp']}, orjson {v['orjson']}, psycopg {v['psycopg']}, channels-redis {v['channels-redis']}",
        f"- Cells: {cfg['warmup']} s warm-up + {cfg['duration']} s measured each (each worker's session is opened "
        f"before the warm-up; a window is stretched until {MIN_OPS} operations completed, at most {MAX_CELL_SECONDS:.0f} s, "
        f"which only the slowest cells need: ContextForge's walks and c=32), concurrencies {cfg['concurrency']}, targets interleaved within each workload and "
        f"concurrency, **{cfg['repeat']} round(s)** (the target order alternates between rounds); every figure below "
        "is the median over the rounds (with two rounds: their mean), errors are summed, and the `per round` column "
        "shows each round's req/s and server CPU ms/op.",
        "- Each target is one worker process. The load generator (one asyncio process, aiohttp, one keep-alive "
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
        "## Budget (issue #4)",
        "",
        "Judged on `gw-daphne-sqlite` (the default deployment) unless the line says otherwise.",
        "",
        "| budget | status | measured |",
        "|---|---|---|",
    ]
    for name, status, detail in budget(report):
        lines.append(f"| {name} | **{status}** | {detail} |")
    lines += before_after_lines(report)
    lines += [
        "",
        "## Results",
        "",
        "`server CPU` is the CPU time of the serving process per operation: the gateway process for `gw-*` "
        "targets and ContextForge, the upstream itself for `direct`. `upstream CPU` is the upstream fixture's CPU per "
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
        d = find(cells, "direct", c["workload"], c["concurrency"])
        up_cpu = c["upstream_cpu_ms_per_op"]
        busy = f"{up_cpu * c['rps'] / 10:.0f}%" if up_cpu is not None else "–"
        ratio = ""
        if d and c["target"] != "direct" and d["rps"] and c["p50_ms"] is not None and d["p50_ms"]:
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
    DOC_PATH.write_text("\n".join(lines))


# ------------------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="MCP Gateway benchmark (loopback only).")
    parser.add_argument(
        "--quick", action="store_true", help="short cells (0.5 s + 2 s), c=1 and 32, one round, 1,000 idle sessions"
    )
    parser.add_argument(
        "--targets", default="", help=f"comma-separated subset of: {', '.join(t.name for t in TARGETS)}"
    )
    parser.add_argument(
        "--workloads", default="", help=f"comma-separated subset of: {', '.join(w.name for w in WORKLOADS)}"
    )
    parser.add_argument("--concurrency", default="", help="comma-separated, e.g. 1,32,256")
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
    for key in ("server_gc", "upstream_gc"):
        cell[key] = rows[len(rows) // 2].get(key)
    cell["rounds"] = [
        {k: r.get(k) for k in ("round", "rps", "p50_ms", "p99_ms", "server_cpu_ms_per_op", "errors")} for r in rows
    ]
    return cell


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        json_path = Path(args.from_json).resolve()
        report = json.loads(json_path.read_text())
        write_markdown(report, json_path)
        print(f"wrote {DOC_PATH.relative_to(ROOT)} from {json_path.relative_to(ROOT)}")
        return 0
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
    cf_installed = (CF_VENV / "bin" / "mcpgateway").exists()
    targets = [
        t for t in TARGETS if (t.name in wanted if wanted else t.default or (t.kind == "contextforge" and cf_installed))
    ]
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
    bulk = any(w.endpoint in BULK_SIZES for w in workloads)
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
            upstreams["up"] = start_upstream(state, "upstream")
            if bulk:
                needed = {w.endpoint for w in workloads if w.endpoint in BULK_SIZES}
                if any(t.kind != "direct" for t in targets):
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
                    urls = {k: f"http://{HOST}:{s.port}/mcp" for k, s in upstreams.items()}
                    live.append(LiveTarget(spec, None, urls, None, upstreams))
                else:
                    live.append(setup_gateway(spec, state, upstreams, bulk))
            rounds: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
            for rnd in range(repeat):
                order = live if rnd % 2 == 0 else live[::-1]  # alternate the order so no target always goes first
                for workload in workloads:
                    for c in concurrency:
                        if workload.max_concurrency and c > workload.max_concurrency:
                            continue
                        # interleaved: every target once per (workload, c) before moving on
                        for target in order:
                            if target.spec.workloads is not None and workload.name not in target.spec.workloads:
                                continue
                            if target.spec.max_concurrency and c > target.spec.max_concurrency:
                                if rnd == 0:
                                    skipped.append(f"{target.spec.name} / {workload.name} / c={c}")
                                continue
                            row = measure_cell(target, workload, c, warmup, duration)
                            row.update(target=target.spec.name, workload=workload.name, concurrency=c, round=rnd)
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
                profiles = run_profiles(live, state, warmup, args.profile_duration)
            if idle_steps:
                for target in live:
                    if target.spec.baseline_of:
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
            "repeat": repeat,
            "quick": args.quick,
            "idle_steps": idle_steps,
            "idle_time_limit": args.idle_time_limit,
            "profile_duration": args.profile_duration if args.profile else None,
        },
        "targets": [{"name": t.spec.name, "description": t.spec.description} for t in live],
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
