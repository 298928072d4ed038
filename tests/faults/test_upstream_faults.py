"""Faults of an upstream, through a live gateway (daphne, its own SQLite database, the in-memory layer): issue #16
item 4, faults 1 and 5.

One gateway serves two upstreams: `fx`, the healthy upstream fixture (tests/fixtures/upstream_server.py, the `mcp`
SDK), and `bad`, the misbehaving one (tests/faults/misbehaving_upstream.py). Each test injects a fault into `bad`
while a second client session keeps calling `fx`'s `echo`, and checks that

- the client of `bad` gets a JSON-RPC error naming the upstream, within a stated bound, never a hang;
- the other session's calls keep answering within HEALTHY_BOUND (they take milliseconds here);
- the gateway serves `bad` again as soon as `bad` behaves (no restart of the gateway).

Every wait has a deadline; every process is killed in `finally`. The stdio counterparts (an upstream process that
exits mid-call, hangs or answers garbage) are in tests/transports/test_bad_upstreams.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from tests.faults.harness import (
    McpClient,
    Process,
    gateway_env,
    http_client,
    misbehaving_upstream,
    running,
    set_up,
    tool_id,
    upstream_state,
)
from tests.fixtures.servers import start_upstream
from tests.jsonrpc import message
from tests.live_gateway import LiveGateway, free_port
from tests.replicas.conftest import Replica

pytestmark = pytest.mark.backend_independent

SERVER_ERROR = -32000
REQUEST_TIMEOUT = -32001
HEALTHY_BOUND = 2.0  # seconds any call of the healthy session may take while `bad` misbehaves
TOOL_TIMEOUT = 1.5  # seconds: the timeout given to `bad`'s slow tool
FLOOD_TIMEOUT = 60.0  # seconds: the flooding tool's timeout, long: the bound on notifications must end it first
MAX_NOTIFICATIONS = 2000  # GATEWAY_UPSTREAM_MAX_NOTIFICATIONS of this gateway
MAX_MESSAGE = 16 * 1024 * 1024  # transports.protocol.upstream.base.DEFAULT_MAX_MESSAGE_SIZE


@dataclass
class Stack:
    gateway: LiveGateway
    bad: Process


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("faults-upstream")
    with contextlib.ExitStack() as stack:
        fx = start_upstream("streamable-http", era="legacy")
        stack.callback(fx.stop)
        bad = stack.enter_context(running(misbehaving_upstream()))
        env = gateway_env(
            f"sqlite:///{state / 'gateway.sqlite3'}", GATEWAY_UPSTREAM_MAX_NOTIFICATIONS=str(MAX_NOTIFICATIONS)
        )
        token = set_up(
            env,
            ("gateway_add", "fx", "--url", fx.url, "--era", "legacy"),
            ("gateway_add", "bad", "--url", f"http://127.0.0.1:{bad.port}/mcp", "--era", "legacy"),
        )
        process = Replica("gateway", free_port(), env, token, state / "gateway.log")
        stack.callback(process.stop)
        process.start()
        gateway = process.live
        for name, timeout in (("bad_slow", TOOL_TIMEOUT), ("bad_flood", FLOOD_TIMEOUT)):
            status, body = gateway.api("PATCH", f"/api/tools/{tool_id(gateway, name)}", {"timeout": timeout})
            assert status == 200, (status, body)
        yield Stack(gateway, bad)


@pytest.fixture(autouse=True)
def _bad_is_running(stack: Stack) -> None:
    """Every test starts with `bad` up (a test that killed it and failed before starting it again)."""
    if not stack.bad.running:
        stack.bad.start()


@dataclass
class Prober:
    """Another client session calling the healthy upstream's `echo` in a loop, in a thread with its own event
    loop, so that what the test's own client does (reading a flood) does not slow its measurements down."""

    url: str
    token: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    async def _run(self) -> None:
        async with http_client() as http:
            client = McpClient(http, self.url, self.token)
            await client.initialize()
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    answer = await client.call("echo", {"message": f"probe {n}"}, timeout=HEALTHY_BOUND * 5)
                except AssertionError as exc:
                    self.failures.append(str(exc))
                    continue
                self.latencies.append(answer.seconds)
                if answer.error is not None or f"probe {n}" not in answer.text():
                    self.failures.append(f"echo {n}: {answer.response}")
                await asyncio.sleep(0.05)

    def check(self) -> None:
        assert self.latencies, "the healthy session made no call"
        assert not self.failures, self.failures[:3]
        worst = max(self.latencies)
        assert worst < HEALTHY_BOUND, (
            f"a healthy call took {worst:.2f} s (median {statistics.median(self.latencies) * 1000:.0f} ms, "
            f"{len(self.latencies)} calls)"
        )


@contextlib.asynccontextmanager
async def healthy_session(stack: Stack) -> AsyncIterator[Prober]:
    """A Prober running for the block; its calls are checked at the end."""
    prober = Prober(stack.gateway.mcp_url(), stack.gateway.token)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(prober._run())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="healthy-session", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not prober.latencies and not errors and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    try:
        yield prober
    finally:
        prober._stop.set()
        thread.join(HEALTHY_BOUND * 5 + 5)
    assert not thread.is_alive(), "the healthy session did not stop"
    assert not errors, errors
    prober.check()


async def wait_for(predicate, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        await asyncio.sleep(0.05)


# -- fault 1: the upstream dies mid-call ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "bound"),
    [
        (False, 3.0),  # no response yet: the POST's connection drops
        (True, 12.0),  # an SSE stream with an event id: the gateway tries to resume it (~7.5 s of backoff)
    ],
    ids=["json-pending", "sse-resumable"],
)
async def test_an_upstream_killed_mid_call_fails_the_call_cleanly_and_the_next_call_reconnects(
    stack: Stack, stream: bool, bound: float
):
    """SIGKILL of the upstream while a tools/call is in flight: the client gets a JSON-RPC error naming the
    upstream within ``bound`` seconds; calls while it is down fail at once; once it is back (same port, new
    process, new upstream session) the next call succeeds without any restart of the gateway."""
    bad = stack.bad
    async with http_client() as http, healthy_session(stack):
        client = McpClient(http, stack.gateway.mcp_url(), stack.gateway.token)
        await client.initialize()
        warm = await client.call("bad_echo", {"text": "before"})
        assert warm.text() == "before", warm

        pending = asyncio.ensure_future(client.call("bad_hang", {"stream": stream}, timeout=60))
        try:
            await wait_for(lambda: upstream_state(bad)["inflight"] >= 1, "the call to reach the upstream", 10)
            killed = time.monotonic()
            bad.kill()
            answer = await asyncio.wait_for(pending, bound + 5)
        finally:
            pending.cancel()
        took = time.monotonic() - killed
        assert answer.status == 200, answer
        assert answer.error is not None, answer
        assert answer.error["code"] == SERVER_ERROR, answer.error
        assert answer.error["message"].startswith("Upstream 'bad' is unavailable: "), answer.error
        assert took < bound, f"the error came {took:.1f} s after the kill"

        down = await client.call("bad_echo", {"text": "while down"})
        assert down.error is not None, down
        assert down.error["message"] == f"Upstream 'bad' is unavailable: connection refused by 127.0.0.1:{bad.port}."
        assert down.seconds < 2.0, down

        bad.start()
        back = await client.call("bad_echo", {"text": "after"}, timeout=10)
        assert back.error is None, back
        assert back.text() == "after", back


# -- fault 5: slow, flooding and oversize upstreams ------------------------------------------------------------------


async def test_a_slow_upstream_times_out_each_call_and_is_told_to_stop(stack: Stack):
    """Eight calls to a tool that answers after 30 s, with the tool's timeout at TOOL_TIMEOUT: each gets -32001
    naming the upstream and the timeout within TOOL_TIMEOUT + 3 s, the upstream gets notifications/cancelled for
    each, and the other session's calls are not slowed down."""
    cancelled = upstream_state(stack.bad)["cancelled"]
    async with http_client() as http, healthy_session(stack):
        client = McpClient(http, stack.gateway.mcp_url(), stack.gateway.token)
        await client.initialize()
        answers = await asyncio.gather(*(client.call("bad_slow", {"seconds": 30}, timeout=15) for _ in range(8)))
        for answer in answers:
            assert answer.error == {
                "code": REQUEST_TIMEOUT,
                "message": f"Upstream 'bad' did not answer within {TOOL_TIMEOUT:g} s.",
            }, answer
            assert answer.seconds < TOOL_TIMEOUT + 3, answer.seconds
        await wait_for(
            lambda: upstream_state(stack.bad)["cancelled"] >= cancelled + 8, "notifications/cancelled upstream", 5
        )


FLOODED = {
    "code": SERVER_ERROR,
    "message": f"Upstream 'bad' sent more than {MAX_NOTIFICATIONS} notifications for one request "
    "(GATEWAY_UPSTREAM_MAX_NOTIFICATIONS); the request was cancelled.",
}


@pytest.mark.parametrize("kind", ["progress", "log"])
async def test_a_flooding_upstream_is_cut_off_at_the_notification_bound(stack: Stack, kind: str):
    """A tool that sends notifications without end (progress for the call's token, or log messages), as fast as
    the gateway reads them: the client gets the first MAX_NOTIFICATIONS, then an error naming the bound, long
    before the tool's timeout; the upstream is told to stop; the other session is not slowed down."""
    cancelled = upstream_state(stack.bad)["cancelled"]
    async with http_client() as http, healthy_session(stack):
        client = McpClient(http, stack.gateway.mcp_url(), stack.gateway.token)
        await client.initialize()
        if kind == "log":
            level = await client.request("logging/setLevel", {"level": "info"})
            assert level.error is None, level
        answer = await client.call("bad_flood", {"count": 0, "kind": kind}, timeout=20, progressToken="p1")
        assert answer.error == FLOODED, answer.response
        assert answer.seconds < 10, answer.seconds
        method = "notifications/progress" if kind == "progress" else "notifications/message"
        relayed = [m for m in answer.messages if m.get("method") == method]
        assert len(relayed) == MAX_NOTIFICATIONS, len(relayed)
        await wait_for(lambda: upstream_state(stack.bad)["cancelled"] > cancelled, "notifications/cancelled", 5)
        after = await client.call("bad_echo", {"text": "after the flood"})
        assert after.text() == "after the flood", after


async def test_a_flood_for_a_client_that_reads_nothing_is_cut_off_all_the_same(stack: Stack):
    """The same flood for a client that sends its tools/call and then reads nothing (daphne would buffer all of it
    for that client): the request is cut off at the bound and cancelled upstream within seconds."""
    bad = stack.bad
    cancelled = upstream_state(bad)["cancelled"]
    async with http_client() as http:
        client = McpClient(http, stack.gateway.mcp_url(), stack.gateway.token)
        await client.initialize()
    port = int(stack.gateway.url.rsplit(":", 1)[1])
    body = json.dumps(
        message("tools/call", {"name": "bad_flood", "arguments": {"count": 0}, "_meta": {"progressToken": "p"}}, 1)
    )
    head = "".join(
        f"{name}: {value}\r\n"
        for name, value in {**client.headers(), "Host": f"127.0.0.1:{port}", "Content-Length": str(len(body))}.items()
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as silent:
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        silent.sendall(f"POST /mcp HTTP/1.1\r\n{head}\r\n{body}".encode())
        await wait_for(
            lambda: upstream_state(bad)["calls"] > 0 and upstream_state(bad)["cancelled"] > cancelled,
            "the flood to be cancelled upstream",
            10,
        )
        await wait_for(lambda: upstream_state(bad)["inflight"] == 0, "the flooding call to end upstream", 5)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_an_oversize_answer_is_refused_with_a_clear_error(stack: Stack, stream: bool):
    """An answer one byte over the upstream message bound (16 MiB), as one JSON body or one SSE event: the client
    gets an error naming the upstream and the bound, not the message; the next call to the same upstream works."""
    async with http_client() as http, healthy_session(stack):
        client = McpClient(http, stack.gateway.mcp_url(), stack.gateway.token)
        await client.initialize()
        answer = await client.call("bad_big", {"size": MAX_MESSAGE + 1, "stream": stream}, timeout=30)
        assert answer.error is not None, answer.status
        assert answer.error["code"] == SERVER_ERROR, answer.error
        message = answer.error["message"]
        assert message.startswith("Upstream 'bad' is unavailable: "), message
        assert str(MAX_MESSAGE) in message, message
        assert answer.seconds < 10, answer.seconds
        after = await client.call("bad_echo", {"text": "after the big one"})
        assert after.text() == "after the big one", after
