"""The WebSocket upstream client: subprotocol `mcp`, one JSON-RPC message per text frame.

WebSocket was never part of the MCP specification and the official SDK dropped it in 2.x, but servers
built on the 1.x Python SDK and the TypeScript SDK (`mcp` subprotocol) still speak it. Messages are
attributed to calls by the rule in `routing.py`. A heartbeat ping detects a dead peer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson

from transports.protocol.upstream.base import UpstreamConfig, UpstreamUnavailable
from transports.protocol.upstream.engine import RpcClient
from transports.protocol.upstream.http import new_session

logger = logging.getLogger("transports.protocol.upstream")

SUBPROTOCOL = "mcp"
_HEARTBEAT = 30.0


class WebSocketClient(RpcClient):
    def __init__(self, config: UpstreamConfig) -> None:
        super().__init__(config)
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def _open_transport(self) -> None:
        name = self.config.name
        if not self.config.url:
            raise UpstreamUnavailable(f"{name}: no URL configured")
        if self._http is None or self._http.closed:
            self._http = new_session(self.config)
        try:
            ws = await self._http.ws_connect(
                self.config.url,
                protocols=(SUBPROTOCOL,),
                heartbeat=_HEARTBEAT,
                max_msg_size=self.config.max_message_size,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                decode_text=False,
            )
        except aiohttp.WSServerHandshakeError as exc:
            refused = f"{name}: WebSocket handshake refused: HTTP {exc.status}"
            raise UpstreamUnavailable(refused, status=exc.status) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(f"{name}: cannot open the WebSocket: {exc!r}") from None
        if ws.protocol != SUBPROTOCOL:
            logger.info("%s: the server did not confirm the %r subprotocol", name, SUBPROTOCOL)
        self._ws = ws
        self._reader = self.spawn(self._read(ws, self._generation))

    async def _close_transport(self, *, final: bool) -> None:
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            try:
                async with asyncio.timeout(2.0):
                    await ws.close()
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
        await self.settle([self._reader])
        self._reader = None
        if final and self._http is not None:
            await self._http.close()
            self._http = None

    async def _read(self, ws: aiohttp.ClientWebSocketResponse[bool], generation: int) -> None:
        name = self.config.name
        reason = "the WebSocket was closed"
        try:
            async for frame in ws:
                if frame.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    try:
                        message = orjson.loads(frame.data)
                    except orjson.JSONDecodeError:
                        logger.warning("%s: skipped a WebSocket frame that is not JSON", name)
                        continue
                    await self._receive(message)
                elif frame.type == aiohttp.WSMsgType.ERROR:
                    reason = f"WebSocket error: {ws.exception()!r}"
                    break
        except (aiohttp.ClientError, OSError) as exc:
            reason = f"WebSocket error: {exc!r}"
        if ws.close_code is not None and reason == "the WebSocket was closed":
            reason = f"the WebSocket was closed (code {ws.close_code})"
        self._connection_lost(reason, generation)

    async def _send(self, message: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise UpstreamUnavailable(f"{self.config.name}: not connected")
        try:
            await ws.send_frame(orjson.dumps(message), aiohttp.WSMsgType.TEXT)
        except (aiohttp.ClientError, OSError, RuntimeError) as exc:
            raise UpstreamUnavailable(f"{self.config.name}: WebSocket send failed: {exc!r}") from None
