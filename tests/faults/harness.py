"""What the fault-injection tests share: processes they start and kill (the misbehaving upstream, a Redis server
of their own), a TCP proxy they can cut, a scratch PostgreSQL database, and a small MCP client over raw HTTP
that reports how long each answer took and never waits without a deadline.

Nothing here touches the machine's own services beyond one uniquely named PostgreSQL database (created and
dropped on DATABASE_URL's server): Redis is a `redis-server` of the test's own on a free port, every process
listens on 127.0.0.1 and runs in its own process group, killed in `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest

from tests import backing_services
from tests.jsonrpc import message
from tests.live_gateway import ADMIN_PASSWORD, LiveGateway, free_port

HERE = Path(__file__).resolve().parent
MISBEHAVING = HERE / "misbehaving_upstream.py"
REDIS_SERVER = "/usr/bin/redis-server"
SESSION_VERSION = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
INIT = {"protocolVersion": SESSION_VERSION, "capabilities": {}, "clientInfo": {"name": "fault-tests", "version": "0"}}
STARTUP = 20.0  # seconds a helper process may take to listen


# -- processes --------------------------------------------------------------------------------------------------


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(predicate: Any, what: str, timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Process:
    """A helper process in its own process group, logging to a file; kill() and stop() end the whole group."""

    argv: list[str]
    port: int
    name: str
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="fault-", suffix=".log")[1]))
    process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Process:
        assert not self.running, f"{self.name} is already running"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_until(lambda: accepts(self.port) or not self.running, f"{self.name} to listen", STARTUP)
        except AssertionError:
            self.stop()
            raise
        if not self.running:
            raise AssertionError(f"{self.name} exited at start:\n{self.log()}")
        return self

    def kill(self) -> None:
        """SIGKILL to the whole group: no goodbye on any connection."""
        self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)

    def signal(self, sig: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Idempotent."""
        if self.process is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(timeout)

    def log(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def misbehaving_upstream(port: int | None = None) -> Process:
    port = port or free_port()
    return Process([sys.executable, str(MISBEHAVING), "--port", str(port)], port, "the misbehaving upstream")


def upstream_state(upstream: Process) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{upstream.port}/state", timeout=5) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def running(process: Process) -> Iterator[Process]:
    process.start()
    try:
        yield process
    finally:
        process.stop()
        with contextlib.suppress(OSError):
            process.log_path.unlink()


# -- Redis of the test's own ------------------------------------------------------------------------------------


def redis_server(directory: Path, port: int | None = None) -> Process:
    """A redis-server on a free loopback port that keeps nothing on disk (never the machine's Redis)."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip(f"needs {REDIS_SERVER} (Debian's redis-server package)")
    port = port or free_port()
    argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(directory), "--daemonize", "no", "--loglevel", "warning"]
    return Process(argv, port, f"redis-server :{port}")


# -- PostgreSQL -------------------------------------------------------------------------------------------------


def postgres_url() -> str:
    """DATABASE_URL when it names PostgreSQL; the tests that need one are skipped otherwise, so they run in CI's
    PostgreSQL + Redis pass and not again in the embedded-default pass."""
    raw = os.environ.get("DATABASE_URL", "")
    if urlsplit(raw).scheme not in ("postgres", "postgresql", "pgsql"):
        pytest.skip("needs PostgreSQL: set DATABASE_URL=postgres://... (CI's PostgreSQL + Redis pass does)")
    return raw.replace("pgsql://", "postgres://", 1)


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new database `mcpgw_faults_<random>` on the server of ``server_url`` (its URL), dropped afterwards."""
    with backing_services.scratch_database(server_url, "faults", who="the fault test") as database:
        yield database


# -- a TCP proxy the test can cut -------------------------------------------------------------------------------


class TcpProxy:
    """127.0.0.1:<port> -> ``target``, on an asyncio loop in a thread of its own. ``cut()`` resets every open
    connection and every new one (the server is unreachable); ``restore()`` forwards again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.cut_now = False
        self.frozen = False
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-tcp-proxy", daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def cut(self) -> None:
        self.cut_now = True
        self._run(self._reset_all())

    def blackhole(self) -> None:
        """Stop forwarding without closing anything: bytes sent either way, and new connections, wait (a network
        path that drops every packet, as the client's TCP stack cannot tell from a very slow server)."""
        self.frozen = True

    def restore(self) -> None:
        self.cut_now = False
        self.frozen = False

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port, reuse_address=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_all()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _reset_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)
        if self.cut_now:
            _reset(writer)
            return
        while self.frozen:
            await asyncio.sleep(0.05)
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError):
            _reset(writer)
            return
        self._writers.update((writer, up_writer))

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    while self.frozen:
                        await asyncio.sleep(0.05)
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                _reset(sink)

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a dead network path or a crashed server looks to the client."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(Exception):
        writer.transport.abort()


# -- a gateway process ------------------------------------------------------------------------------------------

# One Django start-up for the whole setup (each manage.py run costs seconds on a busy machine): migrate, the
# admin, what the test adds, then a token for the admin, printed last.
SETUP = """
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
call_command("ensure_superuser")
{extra}
call_command("issue_token", "admin", "--expires-in", "1d")
"""


def gateway_env(database_url: str, **overrides: str) -> dict[str, str]:
    """A gateway's environment: ``database_url``, no Redis unless an override says so, no background work."""
    return {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
        "DATABASE_URL": database_url,
        "SECRET_KEY": "faults-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DJANGO_SUPERUSER_USERNAME": "admin",
        "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
        "GATEWAY_AUTH_CACHE_SECONDS": "1",
        "GATEWAY_SCHEDULER": "off",
        "LOG_LEVEL": "WARNING",
        **overrides,
    }


def set_up(env: dict[str, str], *calls: tuple[str, ...]) -> str:
    """Run the SETUP script with ``calls`` (call_command arguments) in one manage.py shell; the admin's token."""
    extra = "\n".join(f"call_command{tuple(call)!r}" for call in calls)
    out = LiveGateway(url="", token="", env=env).manage("shell", "-c", SETUP.format(extra=extra))
    return out.strip().splitlines()[-1]


# -- a small MCP client with deadlines --------------------------------------------------------------------------


@dataclass
class Answer:
    """What a POST got: the HTTP status, the JSON-RPC response to the request (None when there was none), the
    other messages that came before it, and how long it took."""

    status: int
    response: dict[str, Any] | None
    messages: list[dict[str, Any]]
    seconds: float
    ended_early: bool = False  # an SSE stream that broke off before the response

    @property
    def error(self) -> dict[str, Any] | None:
        return (self.response or {}).get("error")

    def text(self) -> str:
        result = (self.response or {}).get("result") or {}
        return "".join(part.get("text", "") for part in result.get("content", []))


def parse_sse(lines: list[str]) -> list[tuple[str | None, dict[str, Any] | None]]:
    """(id, JSON-RPC message or None) for each event of complete SSE text lines."""
    events: list[tuple[str | None, dict[str, Any] | None]] = []
    event_id: str | None = None
    data: list[str] = []
    for line in lines:
        if line.startswith(":"):
            continue
        if not line:
            if data or event_id is not None:
                text = "\n".join(data).strip()
                events.append((event_id, json.loads(text) if text else None))
            event_id, data = None, []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
    return events


class McpClient:
    """A session-era Streamable HTTP client of one endpoint, every request under a deadline."""

    def __init__(self, http: httpx2.AsyncClient, url: str, token: str) -> None:
        self.http, self.url, self.token = http, url, token
        self.session_id: str | None = None
        self._ids = iter(range(1, 1_000_000))

    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": ACCEPT, "Content-Type": "application/json"}
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
            headers["MCP-Protocol-Version"] = SESSION_VERSION
        return headers

    async def initialize(self, capabilities: dict[str, Any] | None = None, *, timeout: float = 10) -> dict[str, Any]:
        params = {**INIT, "capabilities": capabilities or {}}
        answer = await self.post(message("initialize", params, next(self._ids)), timeout=timeout, initialize=True)
        assert answer.status == 200, answer
        assert answer.response is not None, answer
        assert "result" in answer.response, answer
        await self.post(message("notifications/initialized"), timeout=timeout)
        return answer.response["result"]

    async def request(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 10) -> Answer:
        return await self.post(message(method, params or {}, next(self._ids)), timeout=timeout)

    async def call(
        self, tool: str, arguments: dict[str, Any] | None = None, *, timeout: float = 10, **meta: Any
    ) -> Answer:
        params: dict[str, Any] = {"name": tool, "arguments": arguments or {}}
        if meta:
            params["_meta"] = meta
        return await self.request("tools/call", params, timeout=timeout)

    async def post(
        self, body: dict[str, Any], *, timeout: float, initialize: bool = False, headers: dict[str, str] | None = None
    ) -> Answer:
        """POST one message; the answer is read to its response (JSON, or SSE up to the response or the end of
        the stream). Fails the test, naming what was sent, when ``timeout`` seconds pass first."""
        started = time.monotonic()
        messages: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(timeout):
                return await self._post(body, started, messages, initialize, {**self.headers(), **(headers or {})})
        except TimeoutError:
            raise AssertionError(
                f"{body.get('method')} to {self.url}: no answer within {timeout:g} s (got meanwhile: {messages[-3:]})"
            ) from None

    async def _post(
        self,
        body: dict[str, Any],
        started: float,
        messages: list[dict[str, Any]],
        initialize: bool,
        headers: dict[str, str],
    ) -> Answer:
        async with self.http.stream("POST", self.url, headers=headers, content=json.dumps(body)) as response:
            if initialize and "mcp-session-id" in response.headers:
                self.session_id = response.headers["mcp-session-id"]
            kind = response.headers.get("content-type", "")
            if not kind.startswith("text/event-stream"):
                raw = await response.aread()
                parsed = json.loads(raw) if raw.strip() else None
                return Answer(response.status_code, parsed, messages, time.monotonic() - started)
            lines: list[str] = []
            try:
                async for line in response.aiter_lines():
                    if line:
                        lines.append(line)
                        continue
                    lines.append("")
                    for _, event in parse_sse(lines):
                        if event is None:
                            continue
                        if "method" not in event and event.get("id") == body.get("id"):
                            return Answer(response.status_code, event, messages, time.monotonic() - started)
                        messages.append(event)
                    lines = []
            except httpx2.HTTPError:
                pass  # the stream broke off
            return Answer(response.status_code, None, messages, time.monotonic() - started, ended_early=True)


def http_client(*, timeout: float = 30) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(timeout=httpx2.Timeout(timeout), trust_env=False)


# -- a gateway's REST API ---------------------------------------------------------------------------------------


def tool_id(gateway: Any, name: str) -> int:
    status, body = gateway.api("GET", "/api/tools?limit=1000")
    assert status == 200, (status, body)
    matches = [item for item in body["items"] if item["name"] == name]
    assert len(matches) == 1, body
    return int(matches[0]["id"])


class SseReader:
    """The events of an SSE response, read in the background: ``next()`` and ``until()`` wait with a deadline,
    ``ended()`` tells whether the stream has ended (cleanly or broken off) within one."""

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response
        self.queue: asyncio.Queue[tuple[str | None, dict[str, Any] | None] | None] = asyncio.Queue()
        self.seen: list[dict[str, Any]] = []
        self.last_id: str | None = None
        self._done = asyncio.Event()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        lines: list[str] = []
        try:
            async for line in self.response.aiter_lines():
                lines.append(line)
                if not line:
                    for event in parse_sse(lines):
                        await self.queue.put(event)
                    lines = []
        except httpx2.HTTPError:
            pass
        finally:
            self._done.set()
            await self.queue.put(None)

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON-RPC message (None: the stream ended first)."""
        async with asyncio.timeout(timeout):
            while True:
                item = await self.queue.get()
                if item is None:
                    self.queue.put_nowait(None)
                    return None
                event_id, body = item
                if event_id:
                    self.last_id = event_id
                if body is not None:
                    self.seen.append(body)
                    return body

    async def until(self, accept: Any, what: str, timeout: float) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    body = await self.next(timeout)
                    if body is None:
                        raise AssertionError(f"the stream ended before {what} (got: {self.seen})")
                    if accept(body):
                        return body
        except TimeoutError:
            raise AssertionError(f"no {what} within {timeout:g} s (got: {self.seen})") from None

    async def ended(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._done.wait()
        return self._done.is_set()
