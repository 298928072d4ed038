"""A live gateway for tests that talk to one over the network: an ASGI server process (daphne, or
gateway_project.daphne_server as `make run` starts it) serving gateway_project.asgi on a free loopback port,
with its own SQLite database, an admin user and a bearer token. Real MCP clients talk to it.

Imported by tests of several folders (protocol, federation, faults, replicas, fuzzing, the REST API fuzzer),
so it is a module of its own rather than a conftest; tests/transports/conftest.py keeps the session fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADMIN_PASSWORD = "live-admin-password-1"
ASGI_APPLICATION = "gateway_project.asgi:application"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, chars: int = 4000) -> str:
    """The end of a log file ("" when there is none), for assertion messages."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@dataclass
class LiveGateway:
    url: str
    token: str
    env: dict[str, str]
    log: Path | None = None

    def api(self, method: str, path: str, body: object | None = None) -> tuple[int, object]:
        """Call the REST API as the admin."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, (json.loads(raw) if raw else None)

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def mcp_url(self, server: str | None = None) -> str:
        return f"{self.url}/servers/{server}/mcp" if server else f"{self.url}/mcp"


def wait_for_health(
    url: str, process: subprocess.Popen[bytes], log: Path, *, timeout: float = 30, interval: float = 0.2
) -> None:
    """Return once ``url``/health answers; fail with the end of ``log`` when the process exits first or
    ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the gateway at {url} did not start:\n{tail(log)}") from None
            time.sleep(interval)


@contextlib.contextmanager
def serving(port: int, env: Mapping[str, str], log_path: Path, *options: str, server: str = "daphne") -> Iterator[str]:
    """``python -m <server> -b 127.0.0.1 -p <port> <options> gateway_project.asgi:application`` in its own
    process group, logging to ``log_path``; its URL once /health answers. SIGTERM to the group on exit, SIGKILL
    when it is still there 10 s later."""
    argv = [sys.executable, "-m", server, "-b", "127.0.0.1", "-p", str(port), *options, ASGI_APPLICATION]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process, log_path)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def start_live_gateway(
    state: Path,
    *,
    port: int | None = None,
    server: str = "daphne",
    server_env: Mapping[str, str] | None = None,
    **overrides: str | None,
) -> Iterator[LiveGateway]:
    """``server`` on a free port (or ``port``: starting again on the same port and ``state`` restarts the same
    gateway, as a client sees it) with its own SQLite database, an admin and a token; stopped on exit.
    ``overrides`` change its environment (None removes a variable, so the setting takes its default);
    ``server_env`` is added for the server process alone, not for the manage.py commands that set it up."""
    port = port or free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
        "DATABASE_URL": f"sqlite:///{state / 'gateway.sqlite3'}",
        "SECRET_KEY": "live-gateway-secret-key-0123456789-abcdefghij",
        "DJANGO_SUPERUSER_USERNAME": "admin",
        "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
        "GATEWAY_AUTH_CACHE_SECONDS": "1",
        "LOG_LEVEL": "WARNING",
        # No background checks or syncs unless a test asks for them (the federation tests do).
        "GATEWAY_SCHEDULER": "off",
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    gateway = LiveGateway(url=f"http://127.0.0.1:{port}", token="", env=env)
    gateway.manage("migrate", "--noinput", "-v0")
    gateway.manage("ensure_superuser")
    gateway.token = gateway.manage("issue_token", "admin", "--expires-in", "1d").strip().splitlines()[-1]
    log_path = state / "daphne.log"
    with serving(port, {**env, **(server_env or {})}, log_path, server=server):
        gateway.log = log_path
        yield gateway
