"""What the stdio wrapper is configured with: where the gateway is and how to reach it.

No Django here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

TOKEN_ENV = "MCP_GATEWAY_TOKEN"
URL_ENV = "MCP_GATEWAY_URL"


@dataclass(frozen=True)
class BridgeConfig:
    """Where the gateway is and how to reach it."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # credentials ride here
    connect_timeout: float = 10.0
    # How long a request waits for an unreachable gateway (restarting, say) before it is answered
    # with an error.
    reconnect_timeout: float = 30.0
    # A request's answer, or the GET stream, silent for this long: the stream is given up (and reopened).
    read_timeout: float = 600.0
    max_message_size: int = 16 * 1024 * 1024
    verify_tls: bool = True
