"""The benchmark's load generator: an asyncio MCP client on aiohttp, one keep-alive connection per worker.

Each worker opens a Streamable HTTP session (2025-11-25: `initialize`, then `notifications/initialized`);
once every worker has its session (or failed to open one) the warm-up starts, then the measured window; each
worker repeats its workload's operation until the cell ends, recording one raw latency sample (and the
operation's start time) per operation.
Answers may be JSON or an SSE stream (the last `data:` line is the JSON-RPC response). Nothing here is
specific to the gateway: the same code drives the upstream directly.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

PROTOCOL_VERSION = "2025-11-25"
REQUEST_TIMEOUT = 30.0


class McpError(Exception):
    pass


def parse_body(content_type: str, body: bytes) -> Any:
    """The JSON-RPC message in a JSON or SSE answer (for SSE, the last `data:` line that holds a message)."""
    if content_type.startswith("text/event-stream"):
        last = None
        for line in body.split(b"\n"):
            if line.startswith(b"data:"):
                data = line[5:].strip()
                if data:
                    last = data
        if last is None:
            raise McpError("SSE answer without a data line")
        return orjson.loads(last)
    if not body:
        return None
    return orjson.loads(body)


class McpClient:
    """One client session over one aiohttp connection."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str | None):
        self.http = http
        self.url = url
        self.next_id = 0
        self.session_id: str | None = None
        self.base_headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        if token:
            self.base_headers["Authorization"] = f"Bearer {token}"
        self.headers = dict(self.base_headers)
        self.aliases: dict[str, str] = {}

    async def _post(self, message: dict[str, Any]) -> tuple[int, Any, Any]:
        async with self.http.post(self.url, data=orjson.dumps(message), headers=self.headers) as response:
            body = await response.read()
            if response.status >= 400:
                raise McpError(f"HTTP {response.status}: {body[:200]!r}")
            payload = parse_body(response.headers.get("Content-Type", ""), body) if response.status != 202 else None
            return response.status, payload, response.headers

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        self.next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        _, payload, _ = await self._post(message)
        if not isinstance(payload, dict) or payload.get("id") != self.next_id:
            raise McpError(f"{method}: answer without our id: {str(payload)[:200]}")
        if "error" in payload:
            raise McpError(f"{method}: JSON-RPC error {payload['error']}")
        return payload["result"]

    async def open(self) -> None:
        """initialize + notifications/initialized; afterwards requests carry the session headers."""
        self.headers = dict(self.base_headers)
        self.next_id += 1
        init = {
            "jsonrpc": "2.0",
            "id": self.next_id,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "mcp-gateway-bench", "version": "1"},
            },
        }
        _, payload, headers = await self._post(init)
        if not isinstance(payload, dict) or "result" not in payload:
            raise McpError(f"initialize failed: {str(payload)[:200]}")
        self.session_id = headers.get("Mcp-Session-Id")
        if self.session_id:
            self.headers["Mcp-Session-Id"] = self.session_id
        self.headers["MCP-Protocol-Version"] = payload["result"].get("protocolVersion", PROTOCOL_VERSION)
        await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def close(self) -> None:
        """DELETE the session (best effort)."""
        if not self.session_id:
            return
        try:
            async with self.http.delete(self.url, headers=self.headers) as response:
                await response.read()
        except (TimeoutError, aiohttp.ClientError):
            pass
        self.session_id = None
        self.headers = dict(self.base_headers)


Operation = Callable[[McpClient], Awaitable[None]]


@dataclass
class CellResult:
    ops: int = 0
    errors: int = 0
    seconds: float = 0.0
    samples_ms: list[float] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)  # time.time() at the start of each sampled operation
    error_examples: list[str] = field(default_factory=list)
    loadgen_cpu_s: float = 0.0
    setup_errors: int = 0

    def summary(self) -> dict[str, Any]:
        samples = sorted(self.samples_ms)

        def pct(p: float) -> float | None:
            if not samples:
                return None
            index = min(len(samples) - 1, max(0, round(p / 100 * len(samples) + 0.5) - 1))
            return round(samples[index], 3)

        return {
            "ops": self.ops,
            "errors": self.errors + self.setup_errors,
            "seconds": round(self.seconds, 3),
            "rps": round(self.ops / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": pct(50),
            "p90_ms": pct(90),
            "p99_ms": pct(99),
            "max_ms": round(samples[-1], 3) if samples else None,
            "loadgen_cpu_ms_per_op": round(self.loadgen_cpu_s * 1000 / self.ops, 4) if self.ops else None,
            "error_examples": self.error_examples[:5],
        }


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_cell(
    *,
    url: str,
    token: str | None,
    operation: Operation,
    concurrency: int,
    warmup: float,
    duration: float,
    session_per_op: bool = False,
    aliases: dict[str, str] | None = None,
    on_measure_start: Callable[[], None] | None = None,
    on_measure_end: Callable[[], None] | None = None,
    setup_timeout: float = 120.0,
    min_ops: int = 0,
    max_duration: float = 60.0,
) -> CellResult:
    """Drive `url` with `concurrency` workers for warmup + duration seconds; record only the `duration` part.

    The workers' sessions are opened before the warm-up starts (waiting at most `setup_timeout` seconds). The
    measured window lasts until `min_ops` operations have completed too, but at most `max_duration` seconds."""
    result = CellResult()
    recording = False
    stop = asyncio.Event()

    sessions_settled = 0

    async def worker() -> None:
        nonlocal recording, sessions_settled
        connector = aiohttp.TCPConnector(limit=1, force_close=False)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            client = McpClient(http, url, token)
            client.aliases = aliases or {}
            if not session_per_op:
                try:
                    await client.open()
                except Exception as exc:
                    result.setup_errors += 1
                    result.error_examples.append(f"setup: {exc!r}"[:300])
                    return
                finally:
                    sessions_settled += 1
            else:
                sessions_settled += 1
            try:
                while not stop.is_set():
                    wall = time.time()
                    started = time.perf_counter()
                    ok = True
                    try:
                        await operation(client)
                    except Exception as exc:
                        ok = False
                        if recording and len(result.error_examples) < 20:
                            result.error_examples.append(repr(exc)[:300])
                    elapsed = (time.perf_counter() - started) * 1000
                    if recording and not stop.is_set():
                        if ok:
                            result.ops += 1
                            result.samples_ms.append(elapsed)
                            result.starts.append(wall)
                        else:
                            result.errors += 1
                    if not ok:
                        await asyncio.sleep(0.01)  # do not spin on a failing target
            finally:
                if not session_per_op:
                    await client.close()

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    # Sessions first, outside the clock: a slow target must not spend its warm-up and window opening them.
    deadline = time.monotonic() + setup_timeout
    while sessions_settled < concurrency and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(warmup)
    if on_measure_start:
        on_measure_start()
    cpu0 = _cpu_self()
    t0 = time.perf_counter()
    recording = True
    await asyncio.sleep(duration)
    # A slow target (one operation taking longer than the window) gets a longer window, up to max_duration.
    while result.ops < min_ops and time.perf_counter() - t0 < max_duration:
        await asyncio.sleep(0.05)
    stop.set()
    result.seconds = time.perf_counter() - t0
    result.loadgen_cpu_s = _cpu_self() - cpu0
    if on_measure_end:
        on_measure_end()
    # Workers finish their current operation; bounded by the request timeout.
    _done, pending = await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 5)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)
    return result


@dataclass
class IdleResult:
    opened: int = 0
    errors: int = 0
    with_session_id: int = 0  # answers that carried Mcp-Session-Id (a stateless server sends none)
    time_limited: bool = False  # stopped at the time limit before opening `count`
    error_examples: list[str] = field(default_factory=list)


async def open_idle_sessions(
    url: str, token: str | None, count: int, concurrency: int = 32, time_limit: float | None = None
) -> IdleResult:
    """Open `count` sessions (initialize + notifications/initialized only) and leave them open.

    The sessions are not deleted: they live until the server stops. With `time_limit` (seconds), no new
    session is started after it has passed.
    """
    result = IdleResult()
    queue = iter(range(count))
    deadline = time.monotonic() + time_limit if time_limit else None

    async def worker() -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
            for _ in queue:
                if deadline is not None and time.monotonic() > deadline:
                    result.time_limited = True
                    return
                client = McpClient(http, url, token)
                try:
                    await client.open()
                    result.opened += 1
                    result.with_session_id += client.session_id is not None
                except Exception as exc:
                    result.errors += 1
                    if len(result.error_examples) < 5:
                        result.error_examples.append(repr(exc)[:300])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result
