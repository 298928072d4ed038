"""Protocol versions the gateway speaks, and how a session-era client's version is negotiated."""

from __future__ import annotations

# Session (legacy) era, newest first: the handshake era, selected by `initialize`.
LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_LEGACY = LEGACY_VERSIONS[0]
# Stateless (modern) era: selected by `_meta["io.modelcontextprotocol/protocolVersion"]`.
MODERN_VERSIONS = ("2026-07-28",)
META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
# Without an MCP-Protocol-Version header, Streamable HTTP servers assume this version.
DEFAULT_HEADER_VERSION = "2025-03-26"


def negotiate(requested: object) -> str:
    """The requested version when we speak it, else our newest (the client then decides)."""
    if isinstance(requested, str) and requested in LEGACY_VERSIONS:
        return requested
    return LATEST_LEGACY


def allows_batches(version: str) -> bool:
    """JSON-RPC batches were added in 2025-03-26 and removed in 2025-06-18."""
    return version == "2025-03-26"


def has_priming_events(version: str) -> bool:
    """SSE priming events (an id and empty data) and `retry` polling are 2025-11-25 features."""
    return version >= "2025-11-25"
