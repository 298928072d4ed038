"""The legacy HTTP+SSE upstream client (MCP 2024-11-05, deprecated but still deployed).

GET the SSE URL and wait for `event: endpoint`; its data is the URL (resolved against the SSE URL, and
required to be on the same origin, since our credentials ride along) to POST every message to. All
answers, responses included, arrive as `event: message` on the GET stream, so messages are attributed
to calls by the rule in `routing.py`. The session lives as long as the GET stream: when it ends the
connection is lost and `connect()` starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from yarl import URL

from transports.protocol.upstream import headers as http_headers
from transports.protocol.upstream.base import UpstreamConfig, UpstreamUnavailable
from transports.protocol.upstream.engine import Call, RpcClient
from transports.protocol.upstream.http import EVENT_STREAM, JSON, content_type, new_session, repeatable, status_error
from transports.protocol.upstream.sse_parser import SSEError, SSEParser

logger = logging.getLogger("transports.protocol.upstream")


class LegacySseClient(RpcClient):
    def __init__(self, config: UpstreamConfig) -> None:
        super().__init__(config)
        self.endpoint: str | None = None  # where messages are POSTed, from the `endpoint` event
        self._http: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=config.connect_timeout, sock_read=config.stream_idle_timeout
        )

    async def _open_transport(self) -> None:
        name = self.config.name
        if not self.config.url:
            raise UpstreamUnavailable(f"{name}: no URL configured")
        if self._http is None or self._http.closed:
            self._http = new_session(self.config)
        self.endpoint = None
        try:
            response = await self._http.get(
                self.config.url, headers={"Accept": EVENT_STREAM}, timeout=self._stream_timeout
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(f"{name}: cannot open the SSE stream: {exc!r}") from None
        if response.status != 200 or content_type(response) != EVENT_STREAM:
            error = await status_error(response, name, "GET the SSE stream")
            response.release()
            if response.status == 200:
                raise UpstreamUnavailable(f"{name}: the SSE URL did not answer with an event stream")
            raise UpstreamUnavailable(str(error), status=response.status)
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reader = self.spawn(self._read(response, ready, self._generation))
        self.endpoint = await ready

    async def _close_transport(self, *, final: bool) -> None:
        await self.settle([self._reader])
        self._reader = None
        self.endpoint = None
        if final and self._http is not None:
            await self._http.close()
            self._http = None

    def _resolve_endpoint(self, data: str) -> str:
        base = URL(self.config.url)
        endpoint = base.join(URL(data.strip()))
        if endpoint.origin() != base.origin():
            raise UpstreamUnavailable(f"{self.config.name}: the endpoint event points to another origin")
        return str(endpoint)

    async def _read(self, response: aiohttp.ClientResponse, ready: asyncio.Future[str], generation: int) -> None:
        name = self.config.name
        parser = SSEParser(self.config.max_message_size)
        reason = "the SSE stream ended"
        try:
            async with response:
                async for chunk in response.content.iter_any():
                    for event in parser.feed(chunk):
                        if event.event == "endpoint":
                            if not ready.done():
                                try:
                                    ready.set_result(self._resolve_endpoint(event.data))
                                except UpstreamUnavailable as exc:
                                    ready.set_exception(exc)
                                    return
                            continue
                        if event.event != "message" or not event.data.strip():
                            continue
                        try:
                            message = orjson.loads(event.data)
                        except orjson.JSONDecodeError:
                            logger.warning("%s: skipped an SSE event that is not JSON", name)
                            continue
                        await self._receive(message)
        except aiohttp.SocketTimeoutError:
            reason = f"the SSE stream was silent for {self.config.stream_idle_timeout:g} s"
        except (aiohttp.ClientError, OSError, SSEError) as exc:
            reason = f"the SSE stream broke: {exc!r}"
        finally:
            if not ready.done():
                ready.set_exception(UpstreamUnavailable(f"{name}: {reason} before the endpoint event"))
        self._connection_lost(reason, generation)

    async def _transmit(self, call: Call, message: dict[str, Any]) -> None:
        await self._send(message, call.headers)

    async def _send(self, message: dict[str, Any], extra: Mapping[str, str] | None = None) -> None:
        name = self.config.name
        http, endpoint = self._http, self.endpoint
        if http is None or http.closed or endpoint is None:
            raise UpstreamUnavailable(f"{name}: not connected")
        body = orjson.dumps(message)
        headers = {"Content-Type": JSON}
        http_headers.add_extra(headers, extra, self.config.headers)
        try:
            try:
                response = await http.post(endpoint, data=body, headers=headers)
            except aiohttp.ServerDisconnectedError:
                if not repeatable(message):
                    raise
                response = await http.post(endpoint, data=body, headers=headers)
            async with response:
                if response.status >= 300:
                    error = await status_error(response, name, f"POST {message.get('method', 'response')}")
                    if response.status == 404:  # the server forgot the session
                        self._connection_lost("the session is gone (HTTP 404)", self._generation)
                    raise error
        except aiohttp.ClientConnectorError as exc:
            self._connection_lost(f"cannot connect: {exc}", self._generation)
            raise UpstreamUnavailable(f"{name}: cannot connect: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(f"{name}: POST failed: {exc!r}") from None
