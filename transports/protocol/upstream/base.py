"""The upstream client interface: configuration, errors and the abstract client.

No Django here (an import-linter contract forbids it): the upstream clients are plain asyncio code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

TRANSPORTS = ("streamable-http", "sse", "websocket", "stdio")

# Protocol versions of the handshake ("legacy") era that these clients speak. The upstream may answer
# `initialize` with any of them; a version outside this set ends the connection attempt.
SUPPORTED_PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

# JSON-RPC error codes used when answering the upstream's own requests.
METHOD_NOT_FOUND = -32601
INTERNAL_ERROR = -32603


def _default_client_info() -> dict[str, str]:
    return {"name": "mcp-gateway", "version": "0.1.0"}


@dataclass(frozen=True)
class UpstreamConfig:
    """Everything needed to reach one upstream MCP server.

    Credentials arrive already rendered as `headers` (HTTP transports) or `env` (stdio); both are kept
    out of `repr()` so that they do not end up in logs.
    """

    name: str  # the gateway's name for this upstream, used in logs and error messages
    transport: str  # "streamable-http" | "sse" | "websocket" | "stdio"
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    cwd: str | None = None
    verify_tls: bool = True
    ca_bundle: str | None = field(default=None, repr=False)  # PEM text; replaces the system trust store
    connect_timeout: float = 10.0  # opening the transport plus the initialize handshake
    request_timeout: float = 60.0  # default deadline of request()
    protocol_version: str = "2025-11-25"  # the version offered in initialize
    client_info: Mapping[str, Any] = field(default_factory=_default_client_info)
    client_capabilities: Mapping[str, Any] = field(default_factory=dict)
    # Additions beyond the first contract, all with safe defaults:
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE  # largest JSON-RPC message (or SSE event) accepted
    notification_timeout: float = 10.0  # how long one handler call for a notification may take
    stream_idle_timeout: float = 300.0  # the standalone GET / legacy SSE stream is reopened after this silence
    keepalive_timeout: float = 4.0  # idle pooled HTTP connections are closed sooner than common servers (5 s)
    max_connections: int = 100  # HTTP connection pool size (every streaming call holds one)
    max_server_requests: int = 32  # server->client requests handled at the same time; more get an error
    shutdown_grace: float = 2.0  # stdio: seconds between SIGTERM and SIGKILL


class UpstreamError(Exception):
    """The upstream answered a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


class UpstreamUnavailable(Exception):
    """The upstream cannot be used: cannot connect, connection lost, process died, or garbage on the wire.

    The message says which. `status` carries the HTTP status when one was received.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UpstreamTimeout(Exception):
    """A request got no answer within its deadline (the upstream was told it is cancelled)."""


MessageHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
"""Receives a JSON-RPC message from the upstream.

For a request (it has an `id`) it returns `{"result": ...}` or `{"error": {...}}`, which the client sends
back to the upstream under the request's id; returning None answers -32601. For a notification it
returns None.
"""

NotificationHandler = MessageHandler
"""Receives the messages that belong to no call. A handler that returns None (typed as
`Callable[[dict], Awaitable[None]]`) fits too; a request it returns None for is answered -32601."""


class UpstreamClient(ABC):
    """One connection (session) to one upstream MCP server, shared by many concurrent calls."""

    config: UpstreamConfig
    initialize_result: dict[str, Any] | None

    @abstractmethod
    async def connect(self) -> dict[str, Any]:
        """Open the transport and run the handshake; return the InitializeResult.

        Safe to call again: a no-op while connected, a fresh connection after a drop.
        """

    @abstractmethod
    async def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        on_message: MessageHandler | None = None,
    ) -> dict[str, Any]:
        """Send a request and return its result object.

        Raises UpstreamError (JSON-RPC error), UpstreamTimeout or UpstreamUnavailable. Cancelling the
        awaiting task sends `notifications/cancelled` upstream. Progress, log messages and
        server->client requests that belong to this call go to `on_message`.
        """

    @abstractmethod
    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a notification."""

    @abstractmethod
    def set_notification_handler(self, handler: NotificationHandler | None) -> None:
        """Receive what belongs to no call: list_changed, resources/updated, unattributed log
        messages and server->client requests (for those the handler must answer)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close the connection (end the session, stop the process)."""

    @property
    @abstractmethod
    def connected(self) -> bool:
        """Whether the handshake has completed and the connection has not been lost since."""
