"""Upstream MCP servers (official `mcp` SDK) in subprocesses on free loopback ports, and clients for them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from transports.protocol.upstream import UpstreamClient, UpstreamConfig, create_client

SERVER = Path(__file__).with_name("mcp_fixture_server.py")
CAPABILITIES: dict[str, Any] = {"elicitation": {"form": {}}, "sampling": {}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fixture server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"fixture server did not listen on {port}")


class ServerProcess:
    """An SDK server in a subprocess; can be killed and started again on the same port."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        path = "/mcp" if self.transport == "streamable-http" else "/sse"
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER), self.transport, str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None


@contextlib.contextmanager
def running(transport: str) -> Iterator[ServerProcess]:
    server = ServerProcess(transport)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def http_server() -> Iterator[ServerProcess]:
    with running("streamable-http") as server:
        yield server


@pytest.fixture(scope="module")
def sse_server() -> Iterator[ServerProcess]:
    with running("sse") as server:
        yield server


@pytest.fixture
def own_http_server() -> Iterator[ServerProcess]:
    """A server of this test's own, which it may kill and restart."""
    with running("streamable-http") as server:
        yield server


def make_config(transport: str, url: str = "", **overrides: Any) -> UpstreamConfig:
    """A config for the session-era tests: the SDK server is dual-era, so `era="auto"` would pick
    2026-07-28; tests of the modern era pass `era=` themselves."""
    options: dict[str, Any] = {
        "name": f"fixture-{transport}",
        "transport": transport,
        "url": url,
        "client_capabilities": CAPABILITIES,
        "connect_timeout": 15.0,
        "request_timeout": 15.0,
        "era": "legacy",
    }
    if transport == "stdio":
        options.update(command=sys.executable, args=(str(SERVER), "stdio"))
    options.update(overrides)
    return UpstreamConfig(**options)


@pytest.fixture(params=["streamable-http", "sse", "stdio"])
def sdk_config(request: pytest.FixtureRequest) -> UpstreamConfig:
    """A config for each transport the SDK server speaks."""
    transport = request.param
    if transport == "stdio":
        return make_config("stdio")
    server = request.getfixturevalue("http_server" if transport == "streamable-http" else "sse_server")
    return make_config(transport, server.url)


@pytest.fixture
async def client(sdk_config: UpstreamConfig) -> AsyncIterator[UpstreamClient]:
    upstream = create_client(sdk_config)
    await upstream.connect()
    try:
        yield upstream
    finally:
        await upstream.aclose()


async def eventually(check: Any, timeout: float = 5.0, interval: float = 0.05) -> Any:
    """Await `check()` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
