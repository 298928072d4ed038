"""A stdio MCP upstream that misbehaves on request: tools `ok`, `die` (exits mid-call), `hang`
(never answers), `garbage` (answers with a non-object result after a line of noise)."""

from __future__ import annotations

import json
import sys

TOOLS = [
    {"name": name, "description": f"{name} behaviour", "inputSchema": {"type": "object", "properties": {}}}
    for name in ("ok", "die", "hang", "garbage")
]


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line)
        method, rid = message.get("method"), message.get("id")
        if rid is None:
            continue
        if method == "initialize":
            send(
                {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "result": {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "misbehaving", "version": "1"},
                    },
                }
            )
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": rid, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            name = message["params"]["name"]
            if name == "die":
                sys.exit(3)
            if name == "hang":
                continue
            if name == "garbage":
                sys.stdout.write("}}} not json {{{\n")
                send({"jsonrpc": "2.0", "id": rid, "result": "this should be an object"})
                continue
            send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "fine"}]}})
        else:
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}})


if __name__ == "__main__":
    main()
