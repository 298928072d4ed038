"""The soak's ``stdio-bridge`` client: ``python -m transports.stdio_bridge`` started for each session, spoken
to on its stdin and stdout (bench/soak_clients.py says what every client does)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from soak_clients import (
    CLIENT_INFO,
    LEGACY_VERSIONS,
    OP_TIMEOUT,
    Soak,
    Unexpected,
    check_result,
    common_op,
    run_ops,
)


class BridgeSession:
    """One run of the stdio bridge: requests on its stdin, answers on its stdout."""

    def __init__(self, soak: Soak, process: asyncio.subprocess.Process, server: str) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.soak, self.process, self.stdin, self.stdout = soak, process, process.stdin, process.stdout
        self.server = server
        self.tally = soak.tally("stdio-bridge")

    async def request(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        request_id = self.soak.next_id()
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}
        self.stdin.write(json.dumps(message).encode() + b"\n")
        await self.stdin.drain()
        while True:
            line = await self.stdout.readline()
            if not line:
                raise Unexpected(f"{method}: the bridge's stdout ended")
            incoming = json.loads(line)
            if "method" not in incoming:
                return check_result(incoming, request_id)
            self.tally.notifications += 1

    async def open(self) -> None:
        version = self.soak.rng.choice(LEGACY_VERSIONS)
        await self.request("initialize", {"protocolVersion": version, "capabilities": {}, "clientInfo": CLIENT_INFO})
        self.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        await self.stdin.drain()

    async def op(self, name: str) -> None:
        await common_op(self.soak, self.server, self.request, name)

    async def close(self) -> None:
        """stdin ends: the bridge must DELETE its session and exit by itself."""
        self.stdin.close()
        async with asyncio.timeout(15):
            code = await self.process.wait()
        if code != 0:
            raise Unexpected(f"the bridge exited with {code}")


async def bridge_client(soak: Soak) -> None:
    """`python -m transports.stdio_bridge` started for each session, spoken to on its stdin and stdout."""
    kind = "stdio-bridge"
    tally = soak.tally(kind)
    env = {**os.environ, "MCP_GATEWAY_TOKEN": soak.token, "PYTHONPATH": soak.root}
    while await soak.proceed():
        async with soak.busy():
            server = soak.server()
            process = await asyncio.create_subprocess_exec(
                soak.python,
                "-m",
                "transports.stdio_bridge",
                "--url",
                soak.url(server, "mcp"),
                cwd=soak.root,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            bridge = BridgeSession(soak, process, server)
            try:
                async with asyncio.timeout(OP_TIMEOUT):
                    await bridge.open()
                tally.sessions_opened += 1
                await run_ops(soak, kind, {"echo": 6, "tools/list": 1, "progress": 1, "ping": 1}, bridge.op)
                await bridge.close()
                tally.sessions_closed += 1
            except (Exception, TimeoutError) as exc:
                tally.error("session", exc)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await soak.think_time()
