"""The stdio wrapper: lets an MCP client that only speaks stdio use a remote gateway.

It reads newline-delimited JSON-RPC on stdin, talks Streamable HTTP to the gateway and writes only MCP
messages to stdout (one per line; logs go to stderr), as basic/transports "stdio" requires of a server.

Session era (2024-11-05 .. 2025-11-25): the client's own `initialize` is forwarded, the `Mcp-Session-Id`
it opens is kept and sent on every later POST, and the standalone GET stream is opened after the
handshake. Whatever the gateway sends on a POST's SSE answer (progress, logs, server-to-client requests
such as elicitation/create) or on the GET stream goes to stdout; the client's responses to those
requests are POSTed back. Client notifications are POSTed and answered with nothing.

2026-07-28: a request whose `params._meta` carries `io.modelcontextprotocol/protocolVersion` is sent on
its own, without a session, with the headers that mirror the body (MCP-Protocol-Version, Mcp-Method,
Mcp-Name, and Mcp-Param-* for the tool arguments annotated `x-mcp-header`, learnt from tools/list).
`notifications/cancelled` closes the request's response stream, which is how that era cancels over HTTP.

When the gateway restarts, see ``StdioBridge`` for what happens to the session and to calls in flight.
No Django here: `manage.py mcp_stdio` and `scripts/mcp-gateway-stdio` both run ``main``.

The package: ``relay`` (``StdioBridge``), ``gateway_http`` (its Streamable HTTP side), ``config``
(``BridgeConfig``) and ``cli`` (options, stdio, signals, ``main``).
"""

from __future__ import annotations

from transports.stdio_bridge.cli import add_arguments, config_from, configure_logging, main, serve
from transports.stdio_bridge.config import TOKEN_ENV, URL_ENV, BridgeConfig
from transports.stdio_bridge.relay import BridgeError, StdioBridge, is_modern

__all__ = [
    "TOKEN_ENV",
    "URL_ENV",
    "BridgeConfig",
    "BridgeError",
    "StdioBridge",
    "add_arguments",
    "config_from",
    "configure_logging",
    "is_modern",
    "main",
    "serve",
]
