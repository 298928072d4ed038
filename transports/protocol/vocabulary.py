"""The MCP vocabulary, declared once: error codes, protocol versions and eras, the method names that more
than one module refers to, log levels, and the reserved `_meta` keys of 2026-07-28.

Plain constants, no imports: the wire format (`jsonrpc`, `versions`), the server side, the upstream
clients and the stdio wrapper all take their names from here, so a code or a key is spelled in one place.
"""

from __future__ import annotations

# ---- error codes ---------------------------------------------------------------------------------------

# JSON-RPC 2.0.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Implementation-defined (-32000..-32019): the SDKs use -32000 for transport errors, -32001 for timeouts.
SERVER_ERROR = -32000
REQUEST_TIMEOUT = -32001
# MCP.
RESOURCE_NOT_FOUND = -32002  # 2024-11-05 .. 2025-11-25
URL_ELICITATION_REQUIRED = -32042  # 2025-11-25
# 2026-07-28 (basic/index, "Error Codes").
HEADER_MISMATCH = -32020
MISSING_CLIENT_CAPABILITY = -32021  # the spec's MissingRequiredClientCapability
UNSUPPORTED_PROTOCOL_VERSION = -32022

# ---- protocol versions and eras ------------------------------------------------------------------------

# Session (legacy) era, newest first: the handshake era, selected by `initialize`.
LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_LEGACY = LEGACY_VERSIONS[0]
# Stateless (modern) era, newest first: selected by `_meta["io.modelcontextprotocol/protocolVersion"]`.
MODERN_VERSIONS = ("2026-07-28",)
LATEST_MODERN = MODERN_VERSIONS[0]
# Without an MCP-Protocol-Version header, Streamable HTTP servers assume this version.
DEFAULT_HEADER_VERSION = "2025-03-26"

# The eras by name. "auto" is a choice, not an era: detect the peer's era (versioning, "Backward
# Compatibility with Initialization-Based Versions"), 2026-07-28 first.
LEGACY = "legacy"
MODERN = "modern"
AUTO = "auto"
ERAS = (AUTO, LEGACY, MODERN)

# ---- methods -------------------------------------------------------------------------------------------

INITIALIZE = "initialize"
PING = "ping"
SERVER_DISCOVER = "server/discover"  # 2026-07-28
SUBSCRIPTIONS_LISTEN = "subscriptions/listen"  # 2026-07-28
LOGGING_SET_LEVEL = "logging/setLevel"
RESOURCES_SUBSCRIBE = "resources/subscribe"
RESOURCES_UNSUBSCRIBE = "resources/unsubscribe"
TOOLS_LIST = "tools/list"
TOOLS_CALL = "tools/call"
PROMPTS_LIST = "prompts/list"
PROMPTS_GET = "prompts/get"
RESOURCES_LIST = "resources/list"
RESOURCES_TEMPLATES_LIST = "resources/templates/list"
RESOURCES_READ = "resources/read"

INITIALIZED = "notifications/initialized"
CANCELLED = "notifications/cancelled"
PROGRESS = "notifications/progress"
LOG_MESSAGE = "notifications/message"
RESOURCES_UPDATED = "notifications/resources/updated"
TOOLS_LIST_CHANGED = "notifications/tools/list_changed"
PROMPTS_LIST_CHANGED = "notifications/prompts/list_changed"
RESOURCES_LIST_CHANGED = "notifications/resources/list_changed"
ROOTS_LIST_CHANGED = "notifications/roots/list_changed"
SUBSCRIPTIONS_ACKNOWLEDGED = "notifications/subscriptions/acknowledged"  # 2026-07-28

# A server's list changes, in the order they are announced.
LIST_CHANGED = (TOOLS_LIST_CHANGED, PROMPTS_LIST_CHANGED, RESOURCES_LIST_CHANGED)
# Notifications about a session as a whole, never about one call.
SESSION_NOTIFICATIONS = frozenset({*LIST_CHANGED, RESOURCES_UPDATED, ROOTS_LIST_CHANGED})
# Results that carry the cache hints of 2026-07-28 (`ttlMs`, `cacheScope`).
CACHEABLE_METHODS = frozenset(
    {SERVER_DISCOVER, TOOLS_LIST, PROMPTS_LIST, RESOURCES_LIST, RESOURCES_TEMPLATES_LIST, RESOURCES_READ}
)
# Session-era methods that 2026-07-28 removed (basic/index).
MODERN_REMOVED = frozenset({PING, LOGGING_SET_LEVEL, RESOURCES_SUBSCRIBE, RESOURCES_UNSUBSCRIBE})
# Methods whose target Streamable HTTP mirrors in `Mcp-Name` (2026-07-28), and the params field it is in.
NAME_FIELDS = {TOOLS_CALL: "name", PROMPTS_GET: "name", RESOURCES_READ: "uri"}
# `subscriptions/listen` filter flags and the list change each asks for (basic/patterns/subscriptions).
LISTEN_FLAGS = {
    "toolsListChanged": TOOLS_LIST_CHANGED,
    "promptsListChanged": PROMPTS_LIST_CHANGED,
    "resourcesListChanged": RESOURCES_LIST_CHANGED,
}

# ---- log levels ----------------------------------------------------------------------------------------

# RFC 5424 severities, least severe first (server/utilities/logging).
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")

# ---- `_meta` keys --------------------------------------------------------------------------------------

# Reserved by 2026-07-28 (basic/index, "_meta").
META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
# The per-request envelope of a 2026-07-28 request: what a session used to hold.
ENVELOPE_KEYS = frozenset({META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_LOG_LEVEL})
# The gateway's own key: the name a 2026-07-28 upstream gave an input request (its `inputRequests` key),
# on the server->client request the upstream client hands on for it; the core names its own
# `inputRequests` after it.
META_INPUT_KEY = "dev.mcp-gateway/inputKey"
