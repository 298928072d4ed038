"""The fuzzer's side of the wire: raw HTTP exchanges, a legacy HTTP+SSE session and a WebSocket session, each
bounded in time, and the checks every answer must pass.

Plain ``http.client`` and ``websockets``' synchronous client rather than an MCP SDK: the point is to send
what no SDK would (broken JSON, bytes that are not UTF-8, wrong headers) and to see exactly what comes back.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.fuzz.strategies import MODERN, Catalog
from tests.live_gateway import LiveGateway

MAX_BODY = 256 * 1024  # the fuzz gateway's GATEWAY_MAX_BODY_BYTES: "huge" bodies cross it, so both sides are tried
TIMEOUT = 20.0  # seconds for any one exchange: longer than the gateway's tool timeout, so only a hang takes it
SSE_EVENT = re.compile(rb"(?:^|\n)data: ?(.*)")

# What must never reach a client: a traceback, a Python exception's class or repr, interpreter internals.
LEAK = re.compile(
    r"Traceback \(most recent call last\)"
    r'|File "[^"]+", line \d+'
    r"|\b(?:Key|Type|Attribute|Value|Index|Name|Runtime|Assertion|UnboundLocal|Recursion|ZeroDivision|Lookup"
    r"|Unicode(?:De|En)code|JSONDecode|JSONEncode|Validation|Overflow|NotImplemented|Import|Memory)Error\b"
    r"|\bStopIteration\b|\bCancelledError\b|\bobject has no attribute\b|\bNoneType\b|\bunhashable type\b"
    r"|\bis not subscriptable\b|\bnot supported between instances\b|<class '|<built-in |<coroutine |<function "
    r"|\bat 0x[0-9a-f]{6,}>"
)


class Violation(AssertionError):
    """An answer broke one of the fuzz properties."""


def valid_id(message: Any) -> Any:
    """The id the gateway can read from a decoded message (orjson's reading of the bytes), else None."""
    value = message.get("id") if isinstance(message, dict) else None
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def server_view(data: bytes) -> Any:
    """The body as the gateway decodes it (orjson: big integers become floats), None when it does not."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def check_text(text: str, where: str) -> None:
    found = LEAK.search(text)
    if found:
        start = max(0, found.start() - 200)
        raise Violation(f"{where}: leaked Python internals {found.group()!r}: ...{text[start : found.end() + 200]}")


def check_message(message: Any, where: str) -> None:
    """A JSON-RPC message from the gateway is well-formed; an error has an int code and a str message."""
    if not isinstance(message, dict):
        raise Violation(f"{where}: not a JSON-RPC object: {str(message)[:300]}")
    if message.get("jsonrpc") != "2.0":
        raise Violation(f"{where}: jsonrpc is not '2.0': {str(message)[:300]}")
    if "error" in message:
        error = message["error"]
        if "result" in message:
            raise Violation(f"{where}: both result and error: {str(message)[:300]}")
        if not isinstance(error, dict):
            raise Violation(f"{where}: error is not an object: {str(message)[:300]}")
        code, text = error.get("code"), error.get("message")
        if not isinstance(code, int) or isinstance(code, bool):
            raise Violation(f"{where}: error code is not an integer: {str(message)[:300]}")
        if not isinstance(text, str):
            raise Violation(f"{where}: error message is not a string: {str(message)[:300]}")
        if "id" not in message:
            raise Violation(f"{where}: an error response without an id member: {str(message)[:300]}")
    if ("result" in message or "error" in message) and valid_id(message) is None and message.get("id") is not None:
        raise Violation(f"{where}: response id of a kind JSON-RPC does not allow: {str(message)[:300]}")


@dataclass
class Reply:
    """One HTTP exchange: status, headers (lower-case names), the raw body, and the JSON-RPC messages in it."""

    status: int
    headers: dict[str, str]
    body: bytes
    messages: list[Any] = field(default_factory=list)
    seconds: float = 0.0

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.headers.get('content-type')!r}, {self.body[:500]!r})"


def _read_sse(response: http.client.HTTPResponse, deadline: float) -> tuple[bytes, list[Any]]:
    """Read an SSE answer until it carries a response (or a listen stream's acknowledgement), ends, or the
    deadline passes; the caller closes the connection."""
    raw = bytearray()
    found: list[Any] = []
    event = bytearray()
    while time.monotonic() < deadline:
        line = response.readline()
        if not line:
            break
        raw += line
        if line in (b"\n", b"\r\n"):
            for match in SSE_EVENT.finditer(bytes(event)):
                data = match.group(1).strip()
                if data:
                    message = json.loads(data)
                    found.append(message)
                    if isinstance(message, dict) and (
                        "result" in message
                        or "error" in message
                        or message.get("method") == "notifications/subscriptions/acknowledged"
                    ):
                        return bytes(raw), found
            event.clear()
        else:
            event += line
    else:
        raise Violation(f"hang: the SSE answer did not finish within {TIMEOUT} s; so far: {bytes(raw)[:500]!r}")
    return bytes(raw), found


def http_exchange(
    base: str, method: str, path: str, body: bytes | None, headers: dict[str, str | bytes], *, timeout: float = TIMEOUT
) -> Reply:
    """One request on a fresh connection; its answer read whole (JSON) or up to its response (SSE)."""
    host, port = base.removeprefix("http://").split(":")
    started = time.monotonic()
    deadline = started + timeout
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():  # what is not Latin-1 goes as UTF-8 bytes, as some clients send it
            connection.putheader(name, value.encode() if isinstance(value, str) and not value.isascii() else value)
        if body is not None:
            connection.putheader("content-length", str(len(body)))
        connection.endheaders(body)
        try:
            response = connection.getresponse()
        except TimeoutError:
            raise Violation(f"hang: no answer within {timeout} s") from None
        reply_headers = {name.lower(): value for name, value in response.getheaders()}
        try:
            if reply_headers.get("content-type", "").startswith("text/event-stream"):
                raw, found = _read_sse(response, deadline)
            else:
                raw, found = response.read(), []
        except TimeoutError:
            raise Violation(f"hang: the answer's body did not arrive within {timeout} s") from None
        reply = Reply(response.status, reply_headers, raw, found, time.monotonic() - started)
    finally:
        connection.close()
    if not found and raw and reply_headers.get("content-type", "").startswith("application/json"):
        try:
            decoded = json.loads(raw)
        except ValueError:
            raise Violation(f"a JSON content type with a body that is not JSON: {raw[:300]!r}") from None
        reply.messages = decoded if isinstance(decoded, list) else [decoded]
    return reply


def check_reply(reply: Reply, where: str) -> None:
    """Not a 5xx, no leaked internals, every JSON-RPC message well-formed."""
    if reply.status >= 500:
        raise Violation(f"{where}: HTTP {reply.status}: {reply.body[:1000]!r}")
    check_text(reply.body.decode("utf-8", "replace"), where)
    for message in reply.messages:
        check_message(message, where)


# -- the gateway -------------------------------------------------------------------------------------------


@dataclass
class FuzzGateway:
    """The live gateway under fuzz, with the helpers every transport's test uses."""

    live: LiveGateway
    catalog: Catalog = field(default_factory=Catalog)
    log_checked: int = 0
    counter: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def base(self) -> str:
        return self.live.url

    @property
    def token(self) -> str:
        return self.live.token

    def next_id(self, what: str) -> str:
        return f"{what}-{next(self.counter)}"

    def auth(self, **extra: str) -> dict[str, str | bytes]:
        return {"authorization": f"Bearer {self.token}", "content-type": "application/json", **extra}

    def skip_log(self) -> None:
        assert self.live.log is not None
        self.log_checked = self.live.log.stat().st_size

    def assert_no_traceback(self) -> None:
        """The gateway logged no traceback since the last look."""
        assert self.live.log is not None
        with open(self.live.log, errors="replace") as log:
            log.seek(self.log_checked)
            written = log.read()
            self.log_checked = log.tell()
        if "Traceback" in written:
            at = written.index("Traceback")
            raise Violation("the gateway logged a traceback:\n" + written[max(0, at - 300) : at + 4000])

    # -- a normal request, to see the gateway still answers --------------------------------------------

    def rpc(self, message: dict[str, Any], path: str = "/rpc") -> dict[str, Any]:
        reply = http_exchange(self.base, "POST", path, orjson.dumps(message), self.auth())
        assert reply.status == 200, reply
        return reply.messages[0]

    def modern_headers(self, method: str, name: str | None = None) -> dict[str, str | bytes]:
        headers = self.auth(
            accept="application/json, text/event-stream", **{"mcp-protocol-version": MODERN, "mcp-method": method}
        )
        if name is not None:
            headers["mcp-name"] = name
        return headers

    def modern(self, method: str, params: dict[str, Any] | None = None, path: str = "/mcp") -> Reply:
        envelope = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        message = {"jsonrpc": "2.0", "id": self.next_id("probe"), "method": method}
        message["params"] = {**(params or {}), "_meta": envelope}
        name = (params or {}).get("name") or (params or {}).get("uri")
        return http_exchange(self.base, "POST", path, orjson.dumps(message), self.modern_headers(method, name))

    def still_serves(self) -> None:
        """A plain 2026-07-28 tools/list and a /rpc ping are answered: the gateway is alive and well."""
        reply = self.modern("tools/list")
        assert reply.status == 200, reply
        assert "result" in reply.messages[-1], reply
        probe = self.next_id("probe")
        answer = self.rpc({"jsonrpc": "2.0", "id": probe, "method": "ping"})
        assert answer == {"jsonrpc": "2.0", "id": probe, "result": {}}, answer

    def session(self, version: str = "2025-11-25", path: str = "/mcp") -> str:
        """A Streamable HTTP session of ``version``, initialized; its Mcp-Session-Id."""
        message = {
            "jsonrpc": "2.0",
            "id": self.next_id("init"),
            "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}},
        }
        headers = self.auth(accept="application/json, text/event-stream")
        reply = http_exchange(self.base, "POST", path, orjson.dumps(message), headers)
        assert reply.status == 200, reply
        session = reply.headers["mcp-session-id"]
        headers.update({"mcp-session-id": session, "mcp-protocol-version": version})
        done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert http_exchange(self.base, "POST", path, orjson.dumps(done), headers).status == 202
        return session


def read_catalog(gateway: FuzzGateway) -> Catalog:
    """Every page of the catalog, as /rpc lists it."""

    def names(method: str, field_: str, key: str) -> list[str]:
        found: list[str] = []
        cursor = None
        while True:
            params = {"cursor": cursor} if cursor else {}
            answer = gateway.rpc({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})["result"]
            found += [entry[key] for entry in answer[field_]]
            cursor = answer.get("nextCursor")
            if not cursor:
                return found

    return Catalog(
        tools=names("tools/list", "tools", "name"),
        resources=names("resources/list", "resources", "uri"),
        templates=names("resources/templates/list", "resourceTemplates", "uriTemplate"),
        prompts=names("prompts/list", "prompts", "name"),
    )


# -- sessions on a long-lived connection (HTTP+SSE, WebSocket) ---------------------------------------------


class StreamSession:
    """A session on one connection; ``frames`` are the JSON-RPC messages it received, in order."""

    gateway: FuzzGateway
    frames: queue.Queue[Any]
    closed: bool

    def request(self, message: dict[str, Any]) -> None:
        """Send one JSON-RPC message on the session (each transport its own way)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def initialize(self) -> Self:
        """initialize (2025-11-25) and notifications/initialized, as a client opens a session."""
        ident = self.gateway.next_id("init")
        params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}
        self.request({"jsonrpc": "2.0", "id": ident, "method": "initialize", "params": params})
        self.drain_until(ident, "initialize")
        self.request({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return self

    def drain_until(self, sentinel: str, where: str) -> list[Any]:
        """Every message up to and including the answer to ``sentinel``; a Violation if none comes in time."""
        got: list[Any] = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Violation(f"{where}: hang: no answer to the sentinel request within {TIMEOUT} s; got {got}")
            try:
                frame = self.frames.get(timeout=left)
            except queue.Empty:
                continue
            if frame is None:
                raise Violation(f"{where}: the connection closed before the sentinel's answer; got {got}")
            got.append(frame)
            if isinstance(frame, dict) and frame.get("id") == sentinel and ("result" in frame or "error" in frame):
                return got


class SseSession(StreamSession):
    """GET /sse opened; messages POSTed to the endpoint it names; its events read by a thread."""

    def __init__(self, gateway: FuzzGateway, path: str = "/sse") -> None:
        self.gateway = gateway
        self.frames = queue.Queue()
        self.closed = False
        host, port = gateway.base.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
        self.connection.request("GET", path, headers={"authorization": f"Bearer {gateway.token}"})
        self.response = self.connection.getresponse()
        assert self.response.status == 200, self.response.read()
        assert self.response.readline() == b"event: endpoint\n"
        self.endpoint = self.response.readline().removeprefix(b"data: ").strip().decode()
        self.response.readline()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        event = bytearray()
        try:
            while line := self.response.readline():  # keep-alive comments every second keep this moving
                if line in (b"\n", b"\r\n"):
                    for match in SSE_EVENT.finditer(bytes(event)):
                        text = match.group(1).decode("utf-8", "replace")
                        check_text(text, "SSE event")
                        self.frames.put(json.loads(text))
                    event.clear()
                else:
                    event += line
        except (OSError, ValueError, AttributeError, Violation) as exc:  # closed by us, or a bad event
            if not self.closed:
                self.frames.put({"reader-error": repr(exc)})
        finally:
            self.closed = True
            self.frames.put(None)

    def post(self, body: bytes, headers: dict[str, str | bytes], endpoint: str | None = None) -> Reply:
        return http_exchange(self.gateway.base, "POST", endpoint or self.endpoint, body, headers)

    def request(self, message: dict[str, Any]) -> None:
        reply = self.post(orjson.dumps(message), self.gateway.auth())
        assert reply.status == 202, reply

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.connection.sock and self.connection.sock.shutdown(2)  # type: ignore[func-returns-value]
        self.connection.close()
        self.reader.join(5)


class WsSession(StreamSession):
    """A WebSocket offering the `mcp` subprotocol; its frames read by a thread."""

    def __init__(self, gateway: FuzzGateway, path: str = "/ws") -> None:
        self.gateway = gateway
        self.frames = queue.Queue()
        self.closed = False
        self.close_code: int | None = None
        # Entered like a context manager (websockets 17 wants that); ``close`` ends it.
        self.socket: ClientConnection = connect(
            gateway.base.replace("http://", "ws://") + path,
            subprotocols=["mcp"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {gateway.token}"},
            open_timeout=TIMEOUT,
            close_timeout=5,
            max_size=None,
            ping_interval=None,  # its keep-alive pings draw from `random`, which Hypothesis sees during draws
        ).__enter__()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for frame in self.socket:
                text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
                try:
                    check_text(text, "WebSocket frame")
                    self.frames.put(json.loads(text))
                except (Violation, ValueError) as exc:
                    self.frames.put({"reader-error": repr(exc), "frame": text[:500]})
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self.close_code = self.socket.close_code
            self.frames.put(None)

    def send(self, data: str | bytes) -> bool:
        """Send one frame; False when the connection has closed."""
        try:
            self.socket.send(data)
        except ConnectionClosed:
            return False
        return True

    def request(self, message: dict[str, Any]) -> None:
        assert self.send(orjson.dumps(message).decode())

    def close(self) -> None:
        self.closed = True
        self.socket.close()
        self.reader.join(5)


@contextlib.contextmanager
def reported(gateway: FuzzGateway, **shown: Any) -> Iterator[None]:
    """Name what was sent when a property fails (Hypothesis shows the drawn values; this adds the rest), and
    leave what the gateway logged meanwhile to this example, not to the next one Hypothesis tries."""
    try:
        yield
    except (Violation, AssertionError) as exc:
        gateway.skip_log()
        details = "\n".join(f"  {name}: {str(value)[:800]}" for name, value in shown.items())
        raise Violation(f"{exc}\n-- sent:\n{details}") from None
