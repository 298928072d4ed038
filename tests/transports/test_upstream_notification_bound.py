"""A bound on what one upstream request may send back (GATEWAY_UPSTREAM_MAX_NOTIFICATIONS; issue #16, fault 5, live
in tests/faults/test_upstream_faults.py): past it the rest is dropped, the request is cancelled upstream and the
client gets a JSON-RPC error naming the setting. Daphne buffers whatever a client does not read, so without the
bound an upstream that floods a slow client fills the gateway's memory until the tool's timeout."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.transports.test_fail_fast import CALLER, INIT, SilentUpstream, core_with, rows
from transports.protocol import jsonrpc


class FloodingUpstream(SilentUpstream):
    """Sends progress for the call without end (yielding now and then, as a socket would)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self.cancelled = False

    async def request(self, method, params=None, *, timeout=None, on_message=None, headers=None) -> dict:
        if method == "tools/list":
            return await super().request(method, params)
        token = ((params or {}).get("_meta") or {}).get("progressToken")
        try:
            while True:
                self.sent += 1
                await on_message(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {"progressToken": token, "progress": self.sent},
                    }
                )
                if self.sent % 50 == 0:
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def call(core, upstream: FloodingUpstream) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    session, _ = await core.initialize(INIT, CALLER)
    relayed: list[dict[str, Any]] = []

    async def emit(message: dict) -> None:
        relayed.append(message)

    request = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {}, "_meta": {"progressToken": "p"}},
    }
    answer = await asyncio.wait_for(core.answer(session, request, emit), 10)
    assert answer is not None
    return answer, relayed


async def test_a_request_that_brings_more_notifications_than_the_bound_is_cancelled_and_fails():
    upstream = FloodingUpstream()
    core = core_with(rows("healthy"), upstream)
    core.relay.max_notifications = 100
    answer, relayed = await call(core, upstream)
    assert answer["error"] == {
        "code": jsonrpc.SERVER_ERROR,
        "message": "Upstream 'up' sent more than 100 notifications for one request "
        "(GATEWAY_UPSTREAM_MAX_NOTIFICATIONS); the request was cancelled.",
    }
    assert len(relayed) == 100
    assert [m["params"]["progress"] for m in relayed] == list(range(1, 101))
    assert upstream.cancelled


async def test_a_cancellation_from_elsewhere_is_still_a_cancellation():
    """The bound's own cancellation is told apart from the client's: a cancelled call stays cancelled."""
    upstream = FloodingUpstream()
    core = core_with(rows("healthy"), upstream)
    core.relay.max_notifications = 1_000_000
    session, _ = await core.initialize(INIT, CALLER)

    async def emit(message: dict) -> None:
        return None

    request = {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
    task = asyncio.ensure_future(core.answer(session, request, emit))
    while upstream.sent < 10:
        await asyncio.sleep(0.001)
    task.cancel()
    result = await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
    assert result[0] is None or isinstance(result[0], asyncio.CancelledError)
    assert upstream.cancelled
