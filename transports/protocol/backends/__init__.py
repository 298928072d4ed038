"""Tool backends: what runs when a client calls a tool.

One interface (``ToolBackend.call(arguments, context)``), several implementations chosen per catalog
entry by its ``integration_type`` (like Django's mail backends): ``upstream_mcp`` relays to an upstream
MCP server, ``memory`` answers from Python callables (tests). REST, CLI and Python-function backends
register the same way. A tool whose kind has no backend, or that its backend cannot serve, is left out
of the snapshot: never advertised in `tools/list`, and a call to it is "Unknown tool".
"""

from transports.protocol.backends.base import CallContext, ToolBackend, ToolBackends, load_backend

__all__ = ["CallContext", "ToolBackend", "ToolBackends", "load_backend"]
