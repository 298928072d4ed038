"""A live gateway for protocol tests: daphne serving gateway_project.asgi on a free loopback port,
with its own SQLite database, an admin user and a bearer token. Real MCP clients talk to it."""

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "live-admin-password-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@contextlib.contextmanager
def start_live_gateway(state: Path, *, port: int | None = None, **overrides: str) -> Iterator[LiveGateway]:
    """daphne on a free port (or ``port``: starting again on the same port and ``state`` restarts the same
    gateway, as a client sees it) with its own SQLite database, an admin and a token; stopped on exit."""
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
        **overrides,
    }
    gateway = LiveGateway(url=f"http://127.0.0.1:{port}", token="", env=env)
    gateway.manage("migrate", "--noinput", "-v0")
    gateway.manage("ensure_superuser")
    gateway.token = gateway.manage("issue_token", "admin", "--expires-in", "1d").strip().splitlines()[-1]
    log_path = state / "daphne.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "gateway_project.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(gateway.url + "/health", timeout=1):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError("the gateway did not start:\n" + log_path.read_text()) from None
                    time.sleep(0.2)
            gateway.log = log_path
            yield gateway
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """One gateway process for the session, with 5 items per list page (catalog entries are added by tests)."""
    with start_live_gateway(tmp_path_factory.mktemp("live-gateway"), GATEWAY_MCP_PAGE_SIZE="5") as gateway:
        yield gateway
