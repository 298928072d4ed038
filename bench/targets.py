"""The benchmark's targets: what can be measured, and setting up and tearing down the gateway, the upstream
fixture and ContextForge in front of the upstream fixture servers.
"""

# ruff: noqa: E501, S310, S603
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config import (
    BENCH_REDIS_URL,
    BULK_SIZES,
    BULK_SOURCE,
    HOST,
    MANY_TOOLS,
    PG_ADMIN_URL,
    PYTHON,
    REST_TOOL,
    ROOT,
    SCALE_CONCURRENCY,
)
from processes import Server, free_port, nginx_server
from workloads import WORKLOADS


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
    env: dict[str, str] = field(default_factory=dict)  # settings of this target (governance on or off)
    upstream: str = "up"  # the upstream behind the workloads' "up" endpoint: the fixture, or "fast"
    workers: int = 1  # gateway (or ContextForge) worker processes
    front: str | None = None  # "nginx": `workers` separate processes behind nginx; None: one command serves them
    concurrency: tuple[int, ...] | None = None  # this target's concurrencies (None: the run's; --concurrency wins)
    idle: bool = True  # measured in the idle-sessions step
    group: str = ""  # "scale": the scale-out cells (`--targets scale` selects the group)


BASELINE_SUFFIX = "-baseline"


def is_baseline(name: str) -> bool:
    return name.endswith(BASELINE_SUFFIX)


CF_MAX_CONCURRENCY = 32

# Governance (docs/governance.md) off and on, for the same tools/call cells in one run: the difference between
# -gov-off and -gov-on is what limits, metrics and the (JSON) access log cost a call (issue #11's budget:
# 0.15 ms); -audit is -gov-off with the audit log of calls on (its default), measured on its own. The limits
# are set at every level but high enough never to refuse; with PostgreSQL + Redis their buckets are in Redis.
HIGH = "999999999/second"
GOVERNANCE_OFF = {
    "GATEWAY_METRICS": "false",
    "GATEWAY_ACCESS_LOG": "false",
    "GATEWAY_AUDIT_CALLS": "false",
    "GATEWAY_AUDIT_CATALOG": "false",
}
AUDIT_ON = {**GOVERNANCE_OFF, "GATEWAY_AUDIT_CALLS": "true", "GATEWAY_AUDIT_CATALOG": "true"}
GOVERNANCE_ON = {
    **GOVERNANCE_OFF,
    "GATEWAY_METRICS": "true",
    "GATEWAY_ACCESS_LOG": "true",
    "GATEWAY_LOG_FORMAT": "json",
    "GATEWAY_RATE_LIMIT_PER_USER": HIGH,
    "GATEWAY_RATE_LIMIT_PER_TOKEN": HIGH,
    "GATEWAY_RATE_LIMIT_PER_SERVER": HIGH,
    "GATEWAY_RATE_LIMIT_PER_TOOL": HIGH,
    "GATEWAY_RATE_LIMIT_PER_GATEWAY": HIGH,
    "GATEWAY_UPSTREAM_MAX_CONCURRENCY": "10000",
}

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
        "gw-daphne-sqlite-gov-off",
        "gateway",
        "daphne",
        "sqlite",
        "gateway, daphne, SQLite: limits, metrics, access log, audit log off",
        workloads=("tools_call",),
        env=GOVERNANCE_OFF,
    ),
    TargetSpec(
        "gw-daphne-sqlite-gov-on",
        "gateway",
        "daphne",
        "sqlite",
        "gateway, daphne, SQLite: limits at every level (in memory), metrics, JSON access log on",
        workloads=("tools_call",),
        env=GOVERNANCE_ON,
    ),
    TargetSpec(
        "gw-daphne-sqlite-audit",
        "gateway",
        "daphne",
        "sqlite",
        "gateway, daphne, SQLite: the audit log of calls on (its default), the rest off",
        workloads=("tools_call",),
        env=AUDIT_ON,
    ),
    TargetSpec(
        "gw-daphne-pg-gov-off",
        "gateway",
        "daphne",
        "postgres",
        "gateway, daphne, PostgreSQL + Redis: limits, metrics, access log and audit log off",
        workloads=("tools_call",),
        env=GOVERNANCE_OFF,
    ),
    TargetSpec(
        "gw-daphne-pg-gov-on",
        "gateway",
        "daphne",
        "postgres",
        "gateway, daphne, PostgreSQL + Redis: limits at every level (Redis), metrics, JSON access log on",
        workloads=("tools_call",),
        env=GOVERNANCE_ON,
    ),
    TargetSpec(
        "contextforge",
        "contextforge",
        description="IBM ContextForge 1.1.0 (comparison, one worker, SQLite, rate limit off, its default stateless "
        "Streamable HTTP), from .tools/contextforge",
        default=False,
        max_concurrency=CF_MAX_CONCURRENCY,
    ),
]


# The scale-out cells (issue #16): tools/call on PostgreSQL + Redis with one and two worker processes, served the
# two ways a host can run several (one command with --workers; separate processes behind nginx, as replicas are
# deployed), beside ContextForge with as many workers; all in front of the fast upstream, so that the upstream
# is never what saturates. CPU per call counts every process of the target (the workers, uvicorn's supervisor,
# nginx).
SCALE = "scale"
_SCALE: dict[str, Any] = {
    "group": SCALE,
    "workloads": ("tools_call",),
    "concurrency": SCALE_CONCURRENCY,
    "idle": False,
    "upstream": "fast",
}
SCALE_TARGETS: list[TargetSpec] = [
    TargetSpec("direct-fast", "direct", description="the fast upstream alone (bench/fast_upstream.py)", **_SCALE),
    TargetSpec(
        "gw-pg-daphne-w1", "gateway", "daphne", "postgres",
        "gateway, PostgreSQL + Redis, one daphne process (`make run`)", **_SCALE,
    ),
    TargetSpec(
        "gw-pg-daphne-w2-nginx", "gateway", "daphne", "postgres",
        "gateway, PostgreSQL + Redis, two daphne processes (replicas) behind nginx: round robin, no affinity, "
        "keep-alive to the replicas", workers=2, front="nginx", **_SCALE,
    ),
    TargetSpec(
        "gw-pg-uvicorn-w1", "gateway", "uvicorn", "postgres",
        "gateway, PostgreSQL + Redis, uvicorn, one worker", **_SCALE,
    ),
    TargetSpec(
        "gw-pg-uvicorn-w2", "gateway", "uvicorn", "postgres",
        "gateway, PostgreSQL + Redis, `uvicorn --workers 2` (two worker processes accepting on one socket)",
        workers=2, **_SCALE,
    ),
    TargetSpec(
        "gw-pg-uvicorn-w2-nginx", "gateway", "uvicorn", "postgres",
        "gateway, PostgreSQL + Redis, two uvicorn processes (one worker each) behind nginx: round robin, no "
        "affinity, keep-alive", workers=2, front="nginx", **_SCALE,
    ),
    TargetSpec(
        "contextforge-w1", "contextforge", db="postgres",
        description="IBM ContextForge 1.1.0, one uvicorn worker (`mcpgateway --workers 1`), rate limit off, its "
        "default stateless Streamable HTTP", default=False, **_SCALE,
    ),
    TargetSpec(
        "contextforge-w2", "contextforge", db="postgres",
        description="IBM ContextForge 1.1.0, two uvicorn workers (`mcpgateway --workers 2`), rate limit off, its "
        "default stateless Streamable HTTP", default=False, workers=2, **_SCALE,
    ),
]  # fmt: skip
TARGETS += SCALE_TARGETS


def wants(spec: TargetSpec, *workloads: str) -> bool:
    """Whether the target runs any of these workloads (what it needs set up)."""
    return spec.workloads is None or any(w in spec.workloads for w in workloads)


@dataclass
class LiveTarget:
    spec: TargetSpec
    token: str | None
    urls: dict[str, str]  # endpoint key ("up", "b10", "b1k", "b10k") -> MCP endpoint URL
    server: Server | None  # the process the URLs reach: the gateway (its supervisor), nginx; None for direct
    upstreams: dict[str, Server]
    pg_db: str | None = None
    redis_prefix: str | None = None  # GATEWAY_REDIS_PREFIX of the postgres targets: their keys go at teardown
    aliases: dict[str, str] = field(default_factory=dict)  # upstream tool name -> the name this target serves
    backends: dict[str, str] = field(default_factory=dict)  # endpoint key -> the upstream behind it
    workers: list[Server] = field(default_factory=list)  # the gateway processes behind `server` when it is nginx

    def upstream(self, endpoint: str) -> Server:
        return self.upstreams[self.backends.get(endpoint, endpoint)]

    def pid(self, endpoint: str) -> int:
        return self.server.pid if self.server else self.upstream(endpoint).pid

    def serving(self) -> list[tuple[str, Server]]:
        """Every server that handles this target's requests, by role: "proxy" (nginx) or "gateway" (a gateway
        or ContextForge process with whatever workers it started). Empty for direct."""
        if self.server is None:
            return []
        if self.workers:
            return [("proxy", self.server), *(("gateway", w) for w in self.workers)]
        return [("gateway", self.server)]

    def stop(self) -> None:
        for server in (self.server, *self.workers):
            if server is not None:
                server.stop()


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


BULK_WORKLOADS = tuple(w.name for w in WORKLOADS if w.endpoint in BULK_SIZES)


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
        GATEWAY_OUTBOUND_ALLOW_PRIVATE="true",  # the REST-tool workload's API listens on loopback
    )
    env.update(spec.env)
    pg_db = redis_prefix = None
    if spec.db == "postgres":
        # Names of this run's own (the random part: a run elsewhere on the same servers may have the same pid).
        pg_db = f"mcpgw_bench_{os.getpid()}_{secrets.token_hex(3)}_{spec.name.replace('-', '_')}"
        _pg_admin(f'CREATE DATABASE "{pg_db}"')
        env["DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + pg_db
        env["REDIS_URL"] = BENCH_REDIS_URL
        # A key prefix of this target's own: no session of an earlier run or of anyone else is counted, and
        # teardown deletes these keys and nothing else.
        redis_prefix = env["GATEWAY_REDIS_PREFIX"] = f"mcpgw-bench-{os.getpid()}-{secrets.token_hex(3)}"
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

    target = LiveTarget(spec, None, {}, None, upstreams, pg_db, redis_prefix)
    try:  # whatever was started or created so far goes if a step fails
        manage("migrate", "--noinput", "-v0")
        manage("ensure_superuser")
        target.token = manage("issue_token", "benchadmin", "--expires-in", "1d").strip().splitlines()[-1]
        manage("gateway_add", "up", "--url", f"http://{HOST}:{upstreams[spec.upstream].port}/mcp")
        manage("server_add", "bench", "--gateway", "up")
        servers = {"up": "bench"}
        if spec.upstream != "up":
            target.backends["up"] = spec.upstream
        # the REST-tool workload: a REST tool on the same server
        if "api" in upstreams and spec.baseline_of is None and wants(spec, "rest_tools_call"):
            config = {
                "url": f"http://{HOST}:{upstreams['api'].port}/echo/bench{{?message}}",
                "method": "GET",
                "extract": "{message: query[0][1]}",
            }
            schema = {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}
            manage(
                "tool_add", REST_TOOL, "--kind", "rest", "--config", json.dumps(config),
                "--input-schema", json.dumps(schema), "--server", "bench",
            )  # fmt: skip
            servers["rest"] = "bench"
            target.backends["rest"] = "api"
        if bulk and wants(spec, *BULK_WORKLOADS):
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
        if spec.front == "nginx":
            # `workers` separate gateway processes (one worker each), as replicas run, behind nginx.
            for i in range(spec.workers):
                worker = _gateway_server(spec, env, tdir, f"{spec.name}-{i + 1}", workers=1, proxied=True)
                target.workers.append(worker)
                worker.start()
            front = tdir / "nginx"
            target.server = nginx_server(front, f"{spec.name}-nginx", [w.port for w in target.workers])
        else:
            target.server = _gateway_server(spec, env, tdir, spec.name, workers=spec.workers)
        target.server.start(timeout=120)
    except BaseException:
        teardown(target)
        raise
    base = f"http://{HOST}:{target.server.port}"
    target.urls = {key: f"{base}/servers/{name}/mcp" for key, name in servers.items()}
    return target


def _gateway_server(
    spec: TargetSpec, env: dict[str, str], tdir: Path, name: str, *, workers: int, proxied: bool = False
) -> Server:
    """One gateway command on a port of its own (not started): daphne (one process) or uvicorn (`--workers`)."""
    port = free_port()
    # Behind nginx the server must keep an idle connection open longer than nginx does (50 s), or nginx may send
    # a request on a connection the server is closing (a 502). daphne waits 60 s; uvicorn's default is 5 s.
    keep_alive = ["--timeout-keep-alive", "75"] if proxied else []
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
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
            *keep_alive,
        ]
    else:
        if workers != 1:
            raise ValueError(f"{spec.name}: daphne serves one process; run several behind nginx (front='nginx')")
        argv = [PYTHON, "-m", daphne_module(spec.root), "-b", HOST, "-p", str(port), "gateway_project.asgi:application"]
    return Server(name, argv, env, port, tdir / f"{name}.log", health_path="/health", cwd=spec.root)


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
    database, pg_db = f"sqlite:///{tdir / 'cf.db'}", None
    if spec.db == "postgres":
        # Its SQLAlchemy URL names the driver; it is an optional dependency, so use whichever its venv has.
        driver = _cf_postgres_driver()
        if driver is None:
            spec = dataclasses.replace(spec, db="sqlite", description=spec.description + "; SQLite (no PostgreSQL "
                                       "driver in its venv)")  # fmt: skip
        else:
            pg_db = f"mcpgw_bench_{os.getpid()}_{secrets.token_hex(3)}_{spec.name.replace('-', '_')}"
            _pg_admin(f'CREATE DATABASE "{pg_db}"')
            database = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", driver, 1) + "/" + pg_db
            spec = dataclasses.replace(spec, description=spec.description + "; PostgreSQL, its in-memory cache")
    env.update(
        HOST=HOST,
        PORT=str(port),
        DATABASE_URL=database,
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
    # `mcpgateway` passes its options on to uvicorn: --workers N runs N worker processes on one socket.
    argv = [str(exe), "--host", HOST, "--port", str(port), "--workers", str(spec.workers)]
    server = Server(spec.name, argv, env, port, tdir / "server.log", "/health")
    target = LiveTarget(spec, None, {}, server, upstreams, pg_db)
    try:
        server.start(timeout=180)
        _configure_contextforge(target, env, bulk)
    except BaseException:
        teardown(target)
        raise
    return target


def _cf_postgres_driver() -> str | None:
    """The SQLAlchemy URL scheme for the PostgreSQL driver ContextForge's venv has, if any."""
    for module, scheme in (("psycopg", "postgresql+psycopg://"), ("psycopg2", "postgresql://")):
        probe = subprocess.run([str(CF_VENV / "bin" / "python"), "-c", f"import {module}"], capture_output=True)
        if probe.returncode == 0:
            return scheme
    return None


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

    up_id = register("up", upstreams[spec.upstream])
    if spec.upstream != "up":
        target.backends["up"] = spec.upstream
    bulk_id = None
    if bulk and wants(spec, *BULK_WORKLOADS):
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
    target.stop()
    if target.pg_db:
        with contextlib.suppress(Exception):
            _pg_admin(f'DROP DATABASE IF EXISTS "{target.pg_db}" WITH (FORCE)')
    if target.redis_prefix:
        with contextlib.suppress(Exception):
            import redis

            client = redis.Redis.from_url(BENCH_REDIS_URL, socket_timeout=10)
            keys = list(client.scan_iter(match=f"{target.redis_prefix}:*", count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i : i + 1000])
            client.close()


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
