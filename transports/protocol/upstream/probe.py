"""What an answer to the `server/discover` probe says about the upstream's protocol era (versioning,
"Backward Compatibility with Initialization-Based Versions" and "Protocol Version Negotiation"). Pure
functions: era detection (era_detection.py) judges the probe with them, and a 2026-07-28 session
(stateless.py) the UnsupportedProtocolVersionError a request may get.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transports.protocol.upstream.base import UpstreamError
from transports.protocol.vocabulary import (
    HEADER_MISMATCH,
    LEGACY_VERSIONS,
    MISSING_CLIENT_CAPABILITY,
    MODERN_VERSIONS,
    UNSUPPORTED_PROTOCOL_VERSION,
)


def _supported(error: UpstreamError) -> list[str] | None:
    data = error.data
    supported = data.get("supported") if isinstance(data, Mapping) else None
    if isinstance(supported, list) and all(isinstance(v, str) for v in supported):
        return list(supported)
    return None


def mutual_modern(supported: list[str] | None) -> str | None:
    """The newest 2026-07-28-era version both sides speak."""
    return next((v for v in MODERN_VERSIONS if supported and v in supported), None)


def probe_verdict(error: UpstreamError, *, http: bool) -> tuple[str, str | None]:
    """What a JSON-RPC error answering the `server/discover` probe means: ("retry", version) when the
    server names a modern version we share, ("modern-refused", None) when it is a modern server that
    refused the probe for another reason, ("legacy", None) otherwise (versioning, "Backward
    Compatibility": anything but a recognized modern error identifies a legacy server; on stdio the
    fallback is not keyed to any one code)."""
    if error.code == UNSUPPORTED_PROTOCOL_VERSION:
        supported = _supported(error)
        version = mutual_modern(supported)
        if version is not None:
            return "retry", version
        if supported is not None and not any(v in LEGACY_VERSIONS for v in supported):
            return "modern-refused", None  # a modern-only server that shares no version with us
        return "legacy", None
    if http and error.code in (HEADER_MISMATCH, MISSING_CLIENT_CAPABILITY):
        return "modern-refused", None
    return "legacy", None


def valid_discover(result: Mapping[str, Any]) -> str | None:
    """The version to speak with a DiscoverResult, or None when it advertises no modern version we speak."""
    supported = result.get("supportedVersions")
    if not isinstance(supported, list) or not isinstance(result.get("capabilities"), Mapping):
        return None
    return mutual_modern([v for v in supported if isinstance(v, str)])
