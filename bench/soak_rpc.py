"""The soak's ``rpc`` client: JSON-RPC over plain HTTP (`/rpc`), no session; and the changes of the upstream's
tool list it triggers (bench/soak_clients.py says what every client does)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
from soak_clients import (
    OP_TIMEOUT,
    Soak,
    Unexpected,
    check_result,
    common_op,
    http_session,
    run_ops,
)


class RpcSession:
    """JSON-RPC over plain HTTP (`/rpc`): a request, a JSON answer; no session on the gateway's side."""

    KIND = "rpc"
    OPS = {"echo": 50, "tools/list": 15, "resources/read": 15, "ping": 10, "notification": 5}

    def __init__(self, soak: Soak, http: aiohttp.ClientSession, server: str) -> None:
        self.soak, self.http, self.server, self.url = soak, http, server, soak.url(server, "rpc")
        self.headers = {**soak.auth(), "Content-Type": "application/json"}

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id = self.soak.next_id()
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            body["params"] = params
        async with self.http.post(self.url, json=body, headers=self.headers) as response:
            if response.status != 200:
                raise Unexpected(f"{method}: HTTP {response.status}: {(await response.read())[:200]!r}")
            return check_result(json.loads(await response.read()), request_id)

    async def op(self, name: str) -> None:
        if await common_op(self.soak, self.server, self.request, name):
            return
        if name == "notification":  # answered with 204 and nothing
            message = {"jsonrpc": "2.0", "method": "ping"}
            async with self.http.post(self.url, json=message, headers=self.headers) as response:
                await response.read()
                if response.status != 204:
                    raise Unexpected(f"a notification got HTTP {response.status}, not 204")


async def rpc_client(soak: Soak) -> None:
    tally = soak.tally(RpcSession.KIND)
    while await soak.proceed():
        async with soak.busy(), http_session() as http:
            client = RpcSession(soak, http, soak.server())
            tally.sessions_opened += 1
            await run_ops(soak, RpcSession.KIND, soak.ops(client.server, RpcSession.OPS), client.op)
            tally.sessions_closed += 1
            await soak.think_time()


async def trigger_changes(soak: Soak, every: float) -> None:
    """Every ``every`` seconds the upstream's tool list changes (test_trigger_tool_change, through /rpc),
    so list_changed notifications fan out to every open stream and the catalog is rebuilt."""
    tally = soak.tally("rpc")
    async with http_session() as http:
        headers = {**soak.auth(), "Content-Type": "application/json"}
        while not soak.stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await soak.stop.wait()
            if soak.stop.is_set():
                return
            if not soak.go.is_set():  # a quiet checkpoint
                continue
            body = {
                "jsonrpc": "2.0",
                "id": soak.next_id(),
                "method": "tools/call",
                "params": {"name": "test_trigger_tool_change", "arguments": {}},
            }
            try:
                async with asyncio.timeout(OP_TIMEOUT):
                    async with http.post(soak.url(soak.servers[0], "rpc"), json=body, headers=headers) as r:
                        check_result(json.loads(await r.read()), body["id"])
                tally.ok("trigger-tool-change")
            except (Exception, TimeoutError) as exc:
                tally.error("trigger-tool-change", exc)
