"""deploy/compose.yaml's topology, run natively (no container engine here): the commands its services name, with
the settings it gives them, against a scratch PostgreSQL database and a Redis database of this test's own.

- `migrate` (one-shot): its command, which must succeed before anything else starts;
- `gateway-1` and `gateway-2`: the image's CMD (deploy/Dockerfile) on two loopback ports, checked by the image's
  HEALTHCHECK command;
- `nginx`: deploy/nginx.conf with the replicas' loopback addresses (tests/deploy/files.loopback_nginx_template)
  and deploy/nginx-proxy.conf as it is;
- `worker` and `beat`: their Celery commands.

Then a client session through nginx is served by both replicas (Streamable HTTP, HTTP+SSE and WebSocket), and
beat's tick makes the worker check and sync the upstream. Container-only parts are adapted, nothing else:
addresses and ports, /app (the image's WORKDIR: this checkout), /tmp paths (a directory of the test's), `python`
and `celery` (this venv's, first on PATH). Skipped, with the reason, when PostgreSQL, Redis or nginx is absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
import websockets
from cryptography.fernet import Fernet
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.backing_services import postgres_base_url, redis_url, require_redis, scratch_database, scratch_redis
from tests.deploy import files
from tests.fixtures.servers import start_upstream
from tests.live_gateway import LiveGateway, free_port, tail
from tests.replicas.conftest import Nginx, nginx_binary, running_nginx

SECRET_KEY = "compose-topology-secret-key-0123456789-abcdefghij"
ADMIN_PASSWORD = "topology-admin-password-1"
WHO = "the compose topology test"  # what a skip for want of a service names
HOSTNAME = "gateway.example.com"  # the first of ALLOWED_HOSTS: what the image's HEALTHCHECK sends
START = 60.0  # seconds a process may take to start on a busy machine
TICK = 90.0  # seconds for beat's tick to have the worker check and sync the upstream
WAIT = 15.0  # seconds for one client message
# Register the upstream fixture as 'fx', serve it as the virtual server 'demo', and print an admin token last.
SETUP_SCRIPT = """
from django.core.management import call_command
call_command("gateway_add", "fx", "--url", "{upstream}")
call_command("server_add", "demo", "--gateway", "fx")
call_command("issue_token", "admin", "--expires-in", "1d")
"""


def service_env(overrides: dict[str, str]) -> dict[str, str]:
    """The environment compose gives the image's services: its literal values, and ours for those it interpolates
    from deploy/.env; DATABASE_URL and REDIS_URL never leak in from the test run."""
    environment = files.compose()["services"][files.MIGRATE]["environment"]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    for key, value in environment.items():
        if "${" in str(value):
            assert key in overrides, f"compose's {key} comes from deploy/.env: the test must give it a value"
        else:
            env[key] = str(value)
    env.update(overrides)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def native(argv: list[str], state: Path, *, port: int | None = None) -> list[str]:
    """A container command for this machine: daphne's -b/-p on loopback, /app/ in this checkout, /tmp/ paths in
    ``state``."""
    out: list[str] = []
    for previous, arg in zip([None, *argv], argv, strict=False):
        if previous in ("-b", "--bind"):
            arg = "127.0.0.1"
        elif previous in ("-p", "--port"):
            assert port is not None, argv
            arg = str(port)
        elif arg.startswith("/app/"):
            arg = str(files.ROOT / arg.removeprefix("/app/"))
        elif arg.startswith("/tmp/"):
            arg = str(state / arg.removeprefix("/tmp/"))
        out.append(arg)
    return out


@contextlib.contextmanager
def started(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` in its own process group, logging to logs/<name>.log; the group gets SIGTERM, then SIGKILL."""
    with open(logs / f"{name}.log", "wb") as out:
        process = subprocess.Popen(
            argv, cwd=files.ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue


def all_logs(logs: Path, chars: int = 2500) -> str:
    return "\n".join(f"--- {path.name}:\n{tail(path, chars)}" for path in sorted(logs.iterdir()))


def wait_healthy(url: str, process: subprocess.Popen[bytes], logs: Path) -> None:
    deadline = time.monotonic() + START
    request = urllib.request.Request(url + "/health", headers={"Host": HOSTNAME})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while True:
        with contextlib.suppress(OSError), opener.open(request, timeout=2) as response:
            if response.status == 200:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{url} did not become healthy\n{all_logs(logs)}")
        time.sleep(0.2)


def served_by(nginx: Nginx, path: str) -> list[int]:
    """The replica port of each request for ``path`` nginx has proxied so far."""
    ports = []
    text = nginx.access_log.read_text() if nginx.access_log.exists() else ""
    for line in text.splitlines():
        _method, uri, _status, upstream = [*line.split(" "), "", "", ""][:4]
        if uri.split("?")[0] == path and upstream.startswith("127.0.0.1:"):
            ports.append(int(upstream.rsplit(":", 1)[1]))
    return ports


async def sessions_through(base: str, token: str) -> None:
    """One client of each kind through nginx: a 2025-11-25 Streamable HTTP session (lists and calls), a legacy
    HTTP+SSE session (its events must come through unbuffered), a WebSocket (nginx's Upgrade handling)."""
    headers = {"Authorization": f"Bearer {token}"}
    endpoint = f"{base}/servers/demo"
    async with (
        asyncio.timeout(60),
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(WAIT, read=60), trust_env=False) as http,
        Client(
            streamable_http_client(f"{endpoint}/mcp", http_client=http), mode="legacy", read_timeout_seconds=WAIT
        ) as client,
    ):
        assert "echo" in {tool.name for tool in (await client.list_tools()).tools}
        for n in range(4):
            echoed = await client.call_tool("echo", {"message": f"call {n}"})
            assert echoed.content[0].text == f"call {n}"

    async with (
        asyncio.timeout(60),
        Client(
            sse_client(f"{endpoint}/sse", headers=headers, timeout=WAIT), mode="legacy", read_timeout_seconds=WAIT
        ) as client,
    ):
        echoed = await client.call_tool("echo", {"message": "over sse"})
        assert echoed.content[0].text == "over sse"

    ws_url = endpoint.replace("http://", "ws://") + "/ws"
    async with (
        asyncio.timeout(60),
        websockets.connect(
            ws_url, subprotocols=[websockets.Subprotocol("mcp")], additional_headers=headers, proxy=None,
            open_timeout=WAIT,
        ) as ws,
    ):  # fmt: skip

        async def ask(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                if message.get("id") == request_id and "method" not in message:
                    return message

        hello = {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "topology", "version": "0"},
        }
        assert "result" in await ask(1, "initialize", hello)
        await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        answer = await ask(2, "tools/call", {"name": "echo", "arguments": {"message": "over a websocket"}})
        assert answer["result"]["content"][0]["text"] == "over a websocket"


SCHEDULED_SYNC = (
    "SELECT count(*) FROM registry_syncrun r JOIN registry_gateway g ON g.id = r.gateway_id "
    "WHERE g.name = 'fx' AND r.trigger = 'schedule' AND r.ok"
)
LAST_CHECKED = "SELECT last_checked_at FROM registry_gateway WHERE name = 'fx'"


def wait_for_tick(database: str, logs: Path) -> None:
    """Until the worker has run a scheduled sync and a health check of 'fx' that beat's ticks found due."""
    deadline = time.monotonic() + TICK
    with psycopg.connect(database, autocommit=True, connect_timeout=5) as db:
        while True:
            synced = db.execute(SCHEDULED_SYNC).fetchone()
            checked = db.execute(LAST_CHECKED).fetchone()
            if synced and synced[0] and checked and checked[0]:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"no scheduled sync and health check within {TICK:g} s\n{all_logs(logs)}")
            time.sleep(0.5)


def skip_without_services() -> None:
    """Skip, naming what is missing, when PostgreSQL, Redis or nginx is not there (CI has all three)."""
    if nginx_binary() is None:
        pytest.skip(f"{WHO} needs nginx: `make system-deps` installs Debian's nginx-light")
    try:
        psycopg.connect(postgres_base_url(), connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.skip(f"{WHO} needs PostgreSQL: {postgres_base_url()} does not answer ({exc})")
    require_redis(redis_url(), who=WHO)


def test_the_compose_topology_serves_a_session_across_both_replicas_and_ticks(tmp_path):
    """migrate, then two gateways behind nginx with no affinity, a Celery worker and beat, as compose runs them."""
    skip_without_services()
    logs = tmp_path / "logs"
    logs.mkdir()
    with (
        scratch_redis(redis_url(), "topology", who=WHO) as redis_prefix,
        scratch_database(postgres_base_url(), "topology", who=WHO) as database,
        contextlib.ExitStack() as stack,
    ):
        env = service_env(
            {
                "DATABASE_URL": database,
                "REDIS_URL": redis_url(),
                "GATEWAY_REDIS_PREFIX": redis_prefix,
                # deploy/.env's part (env.example), with real values.
                "SECRET_KEY": SECRET_KEY,
                "GATEWAY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
                "ALLOWED_HOSTS": f"{HOSTNAME},127.0.0.1",
                "CSRF_TRUSTED_ORIGINS": f"https://{HOSTNAME}",
                "DJANGO_SUPERUSER_USERNAME": "admin",
                "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
                # The image's ENV (pytest-django has set the tests' settings in this process's environment).
                "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
                # Faster than production, so that a tick, a check and a scheduled sync fit in the test.
                "GATEWAY_SCHEDULER_TICK": "1",
                "GATEWAY_HEALTH_INTERVAL": "1",
                "GATEWAY_SYNC_INTERVAL": "2",
            }
        )

        migrate = subprocess.run(
            native(files.service_command(files.MIGRATE), tmp_path),
            cwd=files.ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
        assert migrate.returncode == 0, f"migrate failed:\n{migrate.stdout}\n{migrate.stderr}"
        assert "Created admin user 'admin'" in migrate.stdout, migrate.stdout

        upstream = start_upstream("streamable-http")
        stack.callback(upstream.stop)
        out = LiveGateway(url="", token="", env=env).manage("shell", "-c", SETUP_SCRIPT.format(upstream=upstream.url))
        assert "Registered 'fx'" in out, out
        token = out.strip().splitlines()[-1]

        ports = [free_port() for _ in files.GATEWAYS]
        gateways = [
            stack.enter_context(started(name, native(files.service_command(name), tmp_path, port=port), env, logs))
            for name, port in zip(files.GATEWAYS, ports, strict=True)
        ]
        for service in (files.WORKER, files.BEAT):
            stack.enter_context(started(service, native(files.service_command(service), tmp_path), env, logs))
        for port, process in zip(ports, gateways, strict=True):
            wait_healthy(f"http://127.0.0.1:{port}", process, logs)
            check = [*native(files.image_healthcheck(), tmp_path), f"http://127.0.0.1:{port}/health"]
            result = subprocess.run(check, env=env, capture_output=True, text=True, timeout=30, check=False)
            assert result.returncode == 0, f"the image's HEALTHCHECK failed on {port}: {result.stderr}"

        directory = tmp_path / "nginx"
        directory.mkdir()
        shutil.copy(files.NGINX_PROXY, directory / "mcp-proxy.conf")  # what compose mounts beside default.conf
        nginx = stack.enter_context(running_nginx(directory, *ports, template=files.loopback_nginx_template()))

        with urllib.request.urlopen(nginx.url + "/ready", timeout=WAIT) as response:
            ready = json.loads(response.read())
        assert ready["status"] == "ready", ready
        assert set(ready["checks"]) == {"database", "redis"}, ready

        try:
            asyncio.run(sessions_through(nginx.url, token))
        except Exception as exc:
            raise AssertionError(f"a client through nginx failed: {exc!r}\n{all_logs(logs)}") from exc
        time.sleep(0.5)  # nginx writes a request's log line once it has finished
        streamable = served_by(nginx, "/servers/demo/mcp")
        assert set(streamable) == set(ports), (streamable, ports)  # one session, both replicas
        assert set(served_by(nginx, "/servers/demo/message")) <= set(ports)

        wait_for_tick(database, logs)
        assert "federation.tasks.tick" in tail(logs / f"{files.BEAT}.log", 100_000)
        worker_log = tail(logs / f"{files.WORKER}.log", 1_000_000)
        assert "federation.tasks.check_gateway" in worker_log
        assert "federation.tasks.sync_gateway" in worker_log
