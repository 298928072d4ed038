"""A fast MCP upstream for the benchmark's scale-out cells: `python bench/fast_upstream.py --port N [--era ...]`.

The tests' fixture (tests/fixtures/upstream_server.py, the `mcp` SDK on uvicorn) spends about 1-1.5 ms of CPU per
tools/call and saturates near 500 calls/s on a 2-core machine, so with two gateway workers in front of it the
fixture, not the gateway, would be what is measured. This server speaks just enough Streamable HTTP for the
gateway's upstream client, ContextForge and the load generator, on one asyncio protocol with no framework: an HTTP
parser of its own (Content-Length and chunked request bodies, keep-alive, pipelining) and orjson. It answers
`echo` in a few tens of microseconds of CPU.

Eras (`--era`), as the fixture has them:

- `auto` (default): dual-era. `initialize` opens a 2025-era session (`Mcp-Session-Id`, 404 for an unknown
  session id, DELETE ends it; no GET stream: 405); a request whose `_meta` names 2026-07-28 is served
  statelessly, after checking the `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers against the body
  (HTTP 400, -32020 when they disagree). `server/discover` answers, so a dual-era client (the gateway) speaks
  2026-07-28 to it, as it does to the fixture.
- `legacy`: a server that predates 2026-07-28: a modern request gets HTTP 400 with JSON-RPC -32000 and no modern
  error body, so a dual-era client falls back to `initialize`.
- `modern`: 2026-07-28 only; `initialize` gets -32022 naming the supported version.

Methods: `server/discover`, `initialize`, notifications (202), `ping`, `tools/list` (the one tool `echo`),
`tools/call` of `echo` (`{"message": ...}` back as text, as the fixture's echo does), `resources/list`,
`resources/templates/list` and `prompts/list` (empty); anything else is -32601 (HTTP 404 in 2026-07-28).
Answers are always JSON (`application/json`), never SSE. `GET /health` answers 200.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
from collections import OrderedDict
from typing import Any

import orjson

MODERN = "2026-07-28"
SESSION_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
SERVER_INFO = {"name": "mcp-gateway-bench-fast-upstream", "version": "1"}
CAPABILITIES: dict[str, Any] = {"tools": {}}  # no listChanged: nothing for a client to listen to
ECHO_TOOL = {
    "name": "echo",
    "description": "Echo the message back.",
    "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
}
MAX_SESSIONS = 100_000  # a client that never DELETEs (one session per call) cannot grow this without bound
MAX_HEAD = 64 * 1024
MAX_BODY = 4 * 1024 * 1024

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
HEADER_MISMATCH, UNSUPPORTED_VERSION = -32020, -32022

REASONS = {
    200: b"OK",
    202: b"Accepted",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    411: b"Length Required",
    413: b"Payload Too Large",
}

Answer = tuple[int, bytes, bytes]  # status, extra header lines (each ending in \r\n), JSON body (b"": none)


def _error(status: int, msg_id: Any, code: int, message: str, data: Any = None) -> Answer:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return status, b"", orjson.dumps({"jsonrpc": "2.0", "id": msg_id, "error": error})


def _result(msg_id: Any, result: dict[str, Any], extra: bytes = b"") -> Answer:
    return 200, extra, orjson.dumps({"jsonrpc": "2.0", "id": msg_id, "result": result})


class Mcp:
    """What the server answers; the HTTP framing is in `HttpProtocol`."""

    def __init__(self, era: str) -> None:
        self.era = era
        self.sessions: OrderedDict[str, None] = OrderedDict()

    def get(self, path: bytes) -> Answer:
        if path == b"/health":
            return 200, b"", b'{"status":"ok"}'
        return (405, b"Allow: POST, DELETE\r\n", b"") if path == b"/mcp" else (404, b"", b"")

    def delete(self, headers: dict[bytes, bytes]) -> Answer:
        session = headers.get(b"mcp-session-id", b"").decode("latin-1")
        if session not in self.sessions:
            return 404, b"", b""
        del self.sessions[session]
        return 200, b"", b""

    def post(self, headers: dict[bytes, bytes], body: bytes) -> Answer:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error(400, None, PARSE_ERROR, "Parse error")
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return _error(400, None, INVALID_REQUEST, "Invalid Request: one JSON-RPC 2.0 message per POST")
        method = message.get("method")
        if "id" not in message or not isinstance(method, str):
            return 202, b"", b""  # a notification, or a response to a server->client request (none are sent)
        msg_id = message["id"]
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        meta = params.get("_meta")
        if isinstance(meta, dict) and META_VERSION in meta:
            return self._modern(headers, msg_id, method, params, meta[META_VERSION])
        if self.era == "modern":
            return _error(400, msg_id, UNSUPPORTED_VERSION, "Unsupported protocol version", self._unsupported(None))
        if method == "initialize":
            return self._initialize(msg_id, params)
        session = headers.get(b"mcp-session-id", b"").decode("latin-1")
        if not session:
            return _error(400, msg_id, INVALID_REQUEST, "Bad Request: Missing session ID")
        if session not in self.sessions:
            return _error(404, msg_id, INVALID_REQUEST, "Session not found")
        return self._dispatch(msg_id, method, params, modern=False)

    def _unsupported(self, requested: Any) -> dict[str, Any]:
        supported = [MODERN] if self.era == "modern" else [MODERN, *SESSION_VERSIONS]
        return {"supported": supported, "requested": requested}

    def _initialize(self, msg_id: Any, params: dict[str, Any]) -> Answer:
        requested = params.get("protocolVersion")
        version = requested if requested in SESSION_VERSIONS else SESSION_VERSIONS[0]
        session = secrets.token_hex(16)
        self.sessions[session] = None
        if len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        result = {"protocolVersion": version, "capabilities": CAPABILITIES, "serverInfo": SERVER_INFO}
        return _result(msg_id, result, b"Mcp-Session-Id: " + session.encode() + b"\r\n")

    def _modern(
        self, headers: dict[bytes, bytes], msg_id: Any, method: str, params: dict[str, Any], version: Any
    ) -> Answer:
        if self.era == "legacy":
            # What a server of the session era says to a request it does not understand: no modern error body.
            return _error(400, msg_id, -32000, "Bad Request: No valid session ID provided")
        if version != MODERN:
            return _error(400, msg_id, UNSUPPORTED_VERSION, "Unsupported protocol version", self._unsupported(version))
        # streamable-http "Request Metadata": the headers must repeat what the body says.
        if headers.get(b"mcp-protocol-version", b"").decode("latin-1") != version:
            return _error(400, msg_id, HEADER_MISMATCH, "MCP-Protocol-Version header does not match _meta")
        if headers.get(b"mcp-method", b"").decode("latin-1") != method:
            return _error(400, msg_id, HEADER_MISMATCH, "Mcp-Method header does not match the method")
        if method == "tools/call" and headers.get(b"mcp-name", b"").decode("utf-8", "replace") != params.get("name"):
            return _error(400, msg_id, HEADER_MISMATCH, "Mcp-Name header does not match params.name")
        return self._dispatch(msg_id, method, params, modern=True)

    def _dispatch(self, msg_id: Any, method: str, params: dict[str, Any], *, modern: bool) -> Answer:
        # 2026-07-28: every result says it is complete; lists and discover carry cache hints (none: ttlMs 0).
        fresh = {"resultType": "complete", "ttlMs": 0, "cacheScope": "private"} if modern else {}
        if method == "tools/call":
            if params.get("name") != "echo":
                return _error(200, msg_id, INVALID_PARAMS, f"Unknown tool: {params.get('name')!r}")
            arguments = params.get("arguments")
            text = arguments.get("message", "") if isinstance(arguments, dict) else ""
            result: dict[str, Any] = {"content": [{"type": "text", "text": str(text)}], "isError": False}
            if modern:
                result["resultType"] = "complete"
            return _result(msg_id, result)
        if method == "tools/list":
            return _result(msg_id, {"tools": [ECHO_TOOL], **fresh})
        if method in ("resources/list", "resources/templates/list", "prompts/list"):
            key = {"resources/list": "resources", "resources/templates/list": "resourceTemplates"}.get(
                method, "prompts"
            )
            return _result(msg_id, {key: [], **fresh})
        if method == "server/discover" and modern:
            result = {
                "supportedVersions": [MODERN],
                "capabilities": CAPABILITIES,
                "_meta": {META_SERVER_INFO: SERVER_INFO},
                **fresh,
            }
            return _result(msg_id, result)
        if method == "ping" and not modern:
            return _result(msg_id, {})
        return _error(404 if modern else 200, msg_id, METHOD_NOT_FOUND, f"Method not found: {method}")


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 on one connection: requests are answered in order as soon as each is complete."""

    def __init__(self, mcp: Mcp) -> None:
        self.mcp = mcp
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        while self.transport is not None:
            request = self._take_request()
            if request is None:
                return
            self._answer(*request)

    def _fail(self, status: int) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (status, REASONS[status])
        )
        self.transport.close()
        self.transport = None
        self.buffer = b""

    def _take_request(self) -> tuple[bytes, bytes, dict[bytes, bytes], bytes, bool] | None:
        """(method, path, headers, body, keep-alive) of the first complete request in the buffer, or None."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self._fail(413)
            return None
        lines = self.buffer[:end].split(b"\r\n")
        try:
            method, target, version = lines[0].split(b" ", 2)
        except ValueError:
            self._fail(400)
            return None
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            decoded = self._chunked(start)
            if decoded is None:
                return None
            body, consumed = decoded
        else:
            try:
                length = int(headers.get(b"content-length", b"0"))
            except ValueError:
                self._fail(400)
                return None
            if length > MAX_BODY:
                self._fail(413)
                return None
            if len(self.buffer) < start + length:
                return None
            body, consumed = self.buffer[start : start + length], start + length
        self.buffer = self.buffer[consumed:]
        connection = headers.get(b"connection", b"").lower()
        keep = connection != b"close" if version == b"HTTP/1.1" else connection == b"keep-alive"
        return method, target.split(b"?", 1)[0], headers, body, keep

    def _chunked(self, pos: int) -> tuple[bytes, int] | None:
        """A chunked body starting at `pos` and where the request ends, or None while incomplete."""
        parts = []
        size_total = 0
        while True:
            eol = self.buffer.find(b"\r\n", pos)
            if eol < 0:
                return None
            try:
                size = int(self.buffer[pos:eol].split(b";", 1)[0], 16)
            except ValueError:
                self._fail(400)
                return None
            size_total += size
            if size_total > MAX_BODY:
                self._fail(413)
                return None
            if size == 0:
                trailer_end = self.buffer.find(b"\r\n\r\n", eol)
                if self.buffer[eol : eol + 4] == b"\r\n\r\n":
                    return b"".join(parts), eol + 4
                return (b"".join(parts), trailer_end + 4) if trailer_end >= 0 else None
            if len(self.buffer) < eol + 2 + size + 2:
                return None
            parts.append(self.buffer[eol + 2 : eol + 2 + size])
            pos = eol + 2 + size + 2

    def _answer(self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes, keep: bool) -> None:
        if method == b"POST" and path == b"/mcp":
            status, extra, payload = self.mcp.post(headers, body)
        elif method == b"GET":
            status, extra, payload = self.mcp.get(path)
        elif method == b"DELETE" and path == b"/mcp":
            status, extra, payload = self.mcp.delete(headers)
        else:
            status, extra, payload = 405, b"Allow: GET, POST, DELETE\r\n", b""
        head = b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown"))
        if payload:
            head += b"Content-Type: application/json\r\n"
        head += b"Content-Length: %d\r\n" % len(payload) + extra
        if not keep:
            head += b"Connection: close\r\n"
        assert self.transport is not None
        self.transport.write(head + b"\r\n" + payload)
        if not keep:
            self.transport.close()
            self.transport = None


async def serve(host: str, port: int, era: str) -> None:
    mcp = Mcp(era)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(mcp), host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--era", choices=("auto", "legacy", "modern"), default="auto")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.era))


if __name__ == "__main__":
    main()
