"""Protocol versions the gateway speaks, and how a session-era client's version is negotiated."""

from __future__ import annotations

from transports.protocol.vocabulary import (
    DEFAULT_HEADER_VERSION,
    LATEST_LEGACY,
    LEGACY_VERSIONS,
    META_PROTOCOL_VERSION,
    MODERN_VERSIONS,
)

__all__ = [
    # Declared in vocabulary.py and importable from here too.
    "DEFAULT_HEADER_VERSION",
    "LATEST_LEGACY",
    "LEGACY_VERSIONS",
    "META_PROTOCOL_VERSION",
    "MODERN_VERSIONS",
    "allows_batches",
    "has_priming_events",
    "negotiate",
]


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
