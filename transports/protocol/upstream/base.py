"""The upstream client interface: configuration, errors and the abstract client.

No Django here (an import-linter contract forbids it): the upstream clients are plain asyncio code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from transports.protocol.vocabulary import AUTO, LATEST_LEGACY, LEGACY, META_SERVER_INFO, MODERN, MODERN_VERSIONS

TRANSPORTS = ("streamable-http", "sse", "websocket", "stdio")

# `UpstreamConfig.era` is one of vocabulary.ERAS: "auto" detects the upstream's era at every connect
# (versioning, "Backward Compatibility with Initialization-Based Versions"); "legacy" always runs the
# `initialize` handshake; "modern" requires `server/discover` to succeed. Only Streamable HTTP and stdio
# have a modern era. The versions these clients speak are vocabulary.LEGACY_VERSIONS (an upstream may
# answer `initialize` with any of them; another version ends the connection attempt) and MODERN_VERSIONS.
MODERN_TRANSPORTS = ("streamable-http", "stdio")

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024


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
    protocol_version: str = LATEST_LEGACY  # the version offered in initialize
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
    # The 2026-07-28 ("modern") era:
    era: str = AUTO  # "auto" | "legacy" | "modern" (vocabulary.ERAS)
    probe_timeout: float = 5.0  # stdio: how long `server/discover` may stay unanswered before falling back
    max_input_rounds: int = 16  # multi-round-trip: `input_required` results answered per request, at most
    # `_meta` logLevel of 2026-07-28 requests until `logging/setLevel` says otherwise. "debug" gets every log
    # message, as a session-era server sends them before any setLevel; None asks for none.
    log_level: str | None = "debug"
    cache_max_entries: int = 256  # results kept for their `ttlMs` (0 disables the cache)
    cache_max_entry_bytes: int = 1024 * 1024  # larger results are not cached


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


def describe_server(era: str | None, result: Mapping[str, Any] | None) -> dict[str, Any]:
    """What an upstream says about itself, whatever its era: `protocol_version`, `server_info`,
    `capabilities` and `instructions`, from an InitializeResult (legacy) or a DiscoverResult (modern)."""
    result = result or {}
    capabilities = result.get("capabilities")
    instructions = result.get("instructions")
    description: dict[str, Any] = {
        "capabilities": dict(capabilities) if isinstance(capabilities, Mapping) else {},
        "instructions": instructions if isinstance(instructions, str) else None,
    }
    if era == MODERN:
        meta = result.get("_meta")
        info = meta.get(META_SERVER_INFO) if isinstance(meta, Mapping) else None
        supported = result.get("supportedVersions")
        mutual = [v for v in MODERN_VERSIONS if isinstance(supported, list) and v in supported]
        description["protocol_version"] = mutual[0] if mutual else None
    else:
        info = result.get("serverInfo")
        version = result.get("protocolVersion")
        description["protocol_version"] = version if isinstance(version, str) else None
    description["server_info"] = dict(info) if isinstance(info, Mapping) else {}
    return description


class UpstreamClient(ABC):
    """One connection (session) to one upstream MCP server, shared by many concurrent calls.

    After `connect()`: `era` is "legacy" (an `initialize` handshake: `initialize_result`) or "modern"
    (stateless 2026-07-28: `discover_result`); `protocol_version`, `server_info`, `server_capabilities`
    and `instructions` describe the upstream in either era.
    """

    config: UpstreamConfig
    initialize_result: dict[str, Any] | None = None
    discover_result: dict[str, Any] | None = None
    era: str | None = None  # "legacy" | "modern" once connected
    protocol_version: str | None = None

    @property
    def server_info(self) -> dict[str, Any]:
        """The upstream's name and version (`serverInfo`, or the discover result's `_meta` serverInfo)."""
        return dict(self._description()["server_info"])

    @property
    def server_capabilities(self) -> dict[str, Any]:
        """The capabilities the upstream declared in `initialize` or `server/discover`."""
        return dict(self._description()["capabilities"])

    @property
    def instructions(self) -> str | None:
        value = self._description()["instructions"]
        return value if isinstance(value, str) else None

    def _description(self) -> dict[str, Any]:
        if self.era == MODERN:
            return describe_server(MODERN, self.discover_result)
        return describe_server(LEGACY, self.initialize_result)

    @abstractmethod
    async def connect(self) -> dict[str, Any]:
        """Open the transport, detect the era and return the InitializeResult (legacy) or the
        DiscoverResult (modern).

        Safe to call again: a no-op while connected, a fresh connection (and a fresh era detection)
        after a drop.
        """

    @abstractmethod
    async def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        on_message: MessageHandler | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send a request and return its result object.

        Raises UpstreamError (JSON-RPC error), UpstreamTimeout or UpstreamUnavailable. Cancelling the
        awaiting task cancels the request upstream. Progress, log messages and server->client requests
        that belong to this call go to `on_message` (from a modern upstream, its `input_required`
        rounds arrive there as server->client requests too). `headers` are added to the HTTP request
        (e.g. `Mcp-Param-*`); transports without HTTP requests ignore them.
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
