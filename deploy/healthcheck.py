"""The image's HEALTHCHECK: `python deploy/healthcheck.py [URL]` exits 0 when the gateway's `/health` answers 200.

URL defaults to http://127.0.0.1:8000/health (the image's CMD). Django checks the Host header against
ALLOWED_HOSTS before any view runs, and a production ALLOWED_HOSTS seldom lists 127.0.0.1, so the request names
the first host ALLOWED_HOSTS allows instead. Standard library only: the check starts a bare interpreter.
"""

from __future__ import annotations

import os
import sys
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/health"
TIMEOUT_SECONDS = 4.0


def probe_host(allowed_hosts: str) -> str:
    """A Host value ALLOWED_HOSTS (comma-separated, as the settings read it) accepts; localhost when unset."""
    for entry in allowed_hosts.split(","):
        host = entry.strip()
        if host and host != "*":
            return host.lstrip(".")  # ".example.com" allows example.com itself
    return "localhost"  # unset: the settings' default list has it; "*": anything goes


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        print(f"healthcheck: {url!r} is not an http(s) URL", file=sys.stderr)
        return 2
    host = probe_host(os.environ.get("ALLOWED_HOSTS", ""))
    request = urllib.request.Request(url, headers={"Host": host})  # noqa: S310 - http(s) only, checked above
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no HTTP(S)_PROXY for a local probe
    try:
        with opener.open(request, timeout=TIMEOUT_SECONDS) as response:
            ok = response.status == 200
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
