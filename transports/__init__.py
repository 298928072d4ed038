"""MCP transports: thin adapters (Streamable HTTP, HTTP+SSE, WebSocket, stdio) over the protocol core."""
