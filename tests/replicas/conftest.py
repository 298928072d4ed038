"""Two gateway replicas behind a real round-robin proxy, for the many-replicas tests (issue #6 item 7).

The `cluster` fixture (one per test session) starts:

- the upstream fixture MCP server (tests/fixtures/upstream_server.py), session era only, registered as 'fx'
  (`gateway_add --era legacy`, so a 2026-07-28 client's elicitation is the gateway's own input_required
  bridge) and served whole by the virtual server 'demo';
- replicas A and B: two daphne processes with the same SECRET_KEY, one PostgreSQL database created for this run
  (`mcpgw_replicas_<random>`, dropped at the end) and one Redis key prefix of their own (GATEWAY_REDIS_PREFIX
  `<the run's prefix>-replicas-<random>`, on REDIS_URL's database; its keys, and only those, deleted at the end),
  so nothing here touches pytest-django's database or anyone else's Redis keys;
- nginx in front of both: round robin, no affinity, no upstream keep-alive (so every request is balanced on its
  own), no buffering, WebSocket upgrades passed on. Its access log records which replica served each request.

PostgreSQL and Redis are DATABASE_URL / REDIS_URL when those name a PostgreSQL server / a Redis server, else
postgres://postgres@127.0.0.1:5432 and redis://127.0.0.1:6379/0. When either does not answer, the tests are skipped
with the reason. nginx is /usr/sbin/nginx or the one on PATH (`make system-deps` installs Debian's nginx-light).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.backing_services import postgres_base_url, redis_url, scratch_database, scratch_redis
from tests.fixtures.servers import RunningUpstream, start_upstream
from tests.live_gateway import ADMIN_PASSWORD, ASGI_APPLICATION, ROOT, LiveGateway, free_port, tail, wait_for_health

SECRET_KEY = "replicas-shared-secret-key-0123456789-abcdefghij"
SERVER = "demo"
WHO = "the two-replica test"  # what a skip for want of PostgreSQL or Redis names
# migrate, ensure_superuser, gateway_add fx --url ... --era legacy, server_add demo --gateway fx, issue_token admin
# (the token on the last line).
SETUP_SCRIPT = """
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
call_command("ensure_superuser")
call_command("gateway_add", "fx", "--url", "{upstream}", "--era", "legacy")
call_command("server_add", "{server}", "--gateway", "fx")
call_command("issue_token", "admin", "--expires-in", "1d")
"""


# -- the replicas ------------------------------------------------------------------------------------------------


@dataclass
class Replica:
    """One gateway process (daphne) on a fixed port; stop() and start() again serve the same address."""

    name: str
    port: int
    env: dict[str, str]
    token: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def live(self) -> LiveGateway:
        """The same process as tests/transports sees a gateway: `api` (REST as the admin) and `manage`."""
        return LiveGateway(url=self.url, token=self.token, env=self.env, log=self.log_path)

    def api(self, method: str, path: str, body: object | None = None) -> tuple[int, Any]:
        return self.live.api(method, path, body)

    def start(self) -> None:
        """Start the process (when it is not running) and return once /health answers."""
        self.spawn()
        self.wait_until_up()

    def spawn(self) -> None:
        if self.running:
            return
        with open(self.log_path, "a") as log:
            log.write(f"--- replica {self.name} starting on port {self.port}\n")
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), ASGI_APPLICATION],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches everything it started
            )

    def wait_until_up(self) -> None:
        assert self.process is not None
        wait_for_health(self.url, self.process, self.log_path, interval=0.1)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM to the process group, SIGKILL if it is still there after ``timeout`` seconds."""
        stop_all([self], timeout)


def stop_all(replicas: list[Replica], timeout: float = 10) -> None:
    """Stop several replicas at once (daphne waits a few seconds for open streams before it exits)."""
    processes = []
    for replica in replicas:
        process, replica.process = replica.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            processes.append(process)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


# -- nginx -------------------------------------------------------------------------------------------------------


def nginx_binary() -> str | None:
    if os.access("/usr/sbin/nginx", os.X_OK):
        return "/usr/sbin/nginx"
    return shutil.which("nginx")


# What the gateway needs in a location that proxies to it, shared with production (deploy/nginx.conf).
PROXY_CONF = ROOT / "deploy" / "nginx-proxy.conf"

NGINX_CONF = """\
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}

http {{
    log_format replicas '$request_method $request_uri $status $upstream_addr';
    access_log {dir}/access.log replicas;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;

    # WebSocket upgrades pass through; other requests close the upstream connection (no keep-alive pool),
    # so every request is balanced on its own.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

    # Round robin, no affinity (no ip_hash, hash or sticky): consecutive requests alternate between A and B.
    # A replica that refuses a connection (stopped) passes the request to the other; max_fails=0 keeps it in
    # the rotation, so alternation resumes as soon as it is back.
    upstream gateway {{
        server 127.0.0.1:{port_a} max_fails=0;
        server 127.0.0.1:{port_b} max_fails=0;
    }}

    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 16m;

        location / {{
            proxy_pass http://gateway;
            # Production's proxy settings (HTTP/1.1, Upgrade, Host as sent, no buffering, long timeouts).
            include "{proxy_conf}";
        }}
    }}
}}
"""


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.directory / "access.log"

    @property
    def error_log(self) -> Path:
        return self.directory / "error.log"


@contextlib.contextmanager
def running_nginx(directory: Path, port_a: int, port_b: int, template: str = NGINX_CONF) -> Iterator[Nginx]:
    """nginx in the foreground (`daemon off`) with its own prefix, pid, logs and temp paths in ``directory``; its
    configuration is ``template`` formatted with them, the replicas' ports and the shared proxy settings."""
    binary = nginx_binary()
    if binary is None:
        pytest.fail("the two-replica test needs nginx: run `make system-deps` (apt-get install nginx-light)")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = directory / "nginx.conf"
    # As root nginx would switch its worker to "nobody", which cannot use this private directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(
        template.format(user=user, dir=directory, port=port, port_a=port_a, port_b=port_b, proxy_conf=PROXY_CONF)
    )
    argv = [binary, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf), "-g", "daemon off;"]
    with open(directory / "nginx.out", "w") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    nginx = Nginx(process, port, directory)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "nginx did not start:\n" + tail(directory / "nginx.out") + tail(directory / "error.log")
                )
            time.sleep(0.05)
        yield nginx
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # fast shutdown: a graceful one waits for open streams
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


# -- the cluster -------------------------------------------------------------------------------------------------

_UPSTREAM_ADDR = re.compile(r"127\.0\.0\.1:(\d+)")


@dataclass
class Cluster:
    """Replicas A and B behind nginx, one admin token valid on both, the virtual server 'demo' of the fixture."""

    a: Replica
    b: Replica
    nginx: Nginx
    upstream: RunningUpstream
    token: str
    server: str = SERVER

    @property
    def proxy_url(self) -> str:
        return self.nginx.url

    @property
    def replicas(self) -> tuple[Replica, Replica]:
        return self.a, self.b

    def endpoint(self, base: str, kind: str = "mcp") -> str:
        """``base`` + /servers/demo/<kind> (mcp, sse, ws, rpc); ``base`` is the proxy's URL or a replica's."""
        return f"{base}/servers/{self.server}/{kind}"

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    def name_of(self, base: str) -> str:
        """'A (http://...)', 'B (...)' or 'nginx (...)': who a base URL is, for assertion messages."""
        names = {self.a.url: "A", self.b.url: "B", self.proxy_url: "nginx"}
        return f"{names.get(base, '?')} ({base})"

    def stop_a(self) -> None:
        """SIGTERM to A's process group (and wait for it to exit)."""
        self.a.stop()

    def start_a(self) -> None:
        """Start A again on its port, with the same database and Redis; returns once /health answers."""
        self.a.start()

    def add_tool(self, name: str, *, via: Replica | None = None) -> dict[str, Any]:
        """Create a tool of the fixture's gateway through one replica's REST API (A by default); 'demo' serves
        every tool of that gateway, so the change is a tools/list_changed for its clients."""
        replica = via or self.a
        status, body = replica.api("POST", "/api/tools", {"name": name, "gateway": "fx"})
        assert status == 201, (status, body)
        return body

    def served_by(self) -> list[int]:
        """The replica port of each request nginx has proxied so far (in order)."""
        lines = self.nginx.access_log.read_text().splitlines() if self.nginx.access_log.exists() else []
        ports = []
        for line in lines:
            found = _UPSTREAM_ADDR.findall(line.rsplit(" ", 1)[-1])
            if found:
                ports.append(int(found[-1]))
        return ports

    def logs(self, chars: int = 3000) -> str:
        """The tails of the replicas' and nginx's logs, for assertion messages."""
        parts = [f"--- {r.name} ({r.url}):\n{tail(r.log_path, chars)}" for r in self.replicas]
        parts.append(f"--- nginx error log:\n{tail(self.nginx.error_log, chars)}")
        return "\n".join(parts)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """PostgreSQL + Redis + the upstream fixture + replicas A and B + nginx; all stopped and dropped at the end."""
    state = tmp_path_factory.mktemp("replicas")
    with (
        scratch_redis(redis_url(), "replicas", who=WHO) as redis_prefix,
        scratch_database(postgres_base_url(), "replicas", who=WHO) as database,
        contextlib.ExitStack() as stack,
    ):
        upstream = start_upstream("streamable-http", era="legacy")
        stack.callback(upstream.stop)
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
            "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
            "DATABASE_URL": database,
            "REDIS_URL": redis_url(),
            "GATEWAY_REDIS_PREFIX": redis_prefix,
            "SECRET_KEY": SECRET_KEY,
            "DJANGO_SUPERUSER_USERNAME": "admin",
            "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
            "GATEWAY_AUTH_CACHE_SECONDS": "1",
            "GATEWAY_SSE_KEEPALIVE": "5",
            "LOG_LEVEL": "WARNING",
        }
        # One Django start-up for the whole setup (each manage.py run costs over a second).
        setup = LiveGateway(url="", token="", env=env)
        out = setup.manage("shell", "-c", SETUP_SCRIPT.format(upstream=upstream.url, server=SERVER))
        assert "Registered 'fx'" in out, out
        token = out.strip().splitlines()[-1]

        a, b = (Replica(name, free_port(), env, token, state / f"replica-{name}.log") for name in ("A", "B"))
        stack.callback(stop_all, [a, b])
        for replica in (a, b):
            replica.spawn()
        for replica in (a, b):
            replica.wait_until_up()
        nginx = stack.enter_context(running_nginx(state / "nginx", a.port, b.port))
        yield Cluster(a=a, b=b, nginx=nginx, upstream=upstream, token=token)


@pytest.fixture(autouse=True)
def _both_replicas_up(cluster: Cluster) -> None:
    """Every test starts with A and B serving (a test that stopped A and failed before restarting it)."""
    for replica in cluster.replicas:
        replica.start()
