"""A hand-written stdio upstream for behaviour the SDK server never shows.

Run: python raw_stdio_server.py MODE
(MODE: ignore-sigterm | env | bad | long-lines | early | noise | silent-discover | die-on-discover)

`silent-discover` never answers `server/discover` (like servers that drop requests before `initialize`);
`die-on-discover` exits on it (like older SDK servers that crash on a request before `initialize`); every
other mode answers it with an empty result, which is no DiscoverResult.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def send(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    mode = sys.argv[1]
    if mode == "ignore-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for line in sys.stdin:
        message = json.loads(line)
        method, rid = message.get("method"), message.get("id")
        if rid is None:
            continue
        if mode == "silent-discover" and method == "server/discover":
            continue
        if mode == "die-on-discover" and method == "server/discover":
            sys.stderr.write("RuntimeError: Received request before initialization was complete\n")
            sys.exit(1)
        if mode == "noise":
            sys.stdout.write("this is not json\n\n")
        if method == "initialize":
            if mode == "early":
                send({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "hi"}})
            if mode == "long-lines":
                sys.stderr.write("E" * 10_000 + "\n")
                sys.stderr.flush()
                sys.stdout.write("[" + "1," * 5000 + "1]\n")  # valid JSON, but over the size limit
            result = {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "serverInfo": {"name": "raw", "version": "0"},
            }
            send({"jsonrpc": "2.0", "id": rid, "result": result})
        elif method == "env":
            send({"jsonrpc": "2.0", "id": rid, "result": {"env": dict(os.environ)}})
        elif method == "bad":
            send({"jsonrpc": "2.0", "id": rid, "nothing": True})
        else:
            send({"jsonrpc": "2.0", "id": rid, "result": {}})
    if mode == "ignore-sigterm":
        time.sleep(60)  # stdin closed and SIGTERM ignored: only SIGKILL ends this


if __name__ == "__main__":
    main()
