"""The MCP protocol core: JSON-RPC, eras, the method table, sessions, routing, upstream clients."""
