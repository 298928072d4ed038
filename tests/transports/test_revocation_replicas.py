"""Revoking a token takes effect on every replica within a second (issue #11 item 6): two live gateways share a
database and Redis; a token B has verified (and would remember for GATEWAY_AUTH_CACHE_SECONDS=30) is revoked
through A's REST API, and B refuses it within a second, because the revocation travels over the channel
layer's "gateway.auth" group to B's credential cache."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.live_gateway import LiveGateway, start_live_gateway
from tests.redis_keys import scoped_prefix

pytestmark = [pytest.mark.redis]


def mcp_status(gateway: LiveGateway, token: str) -> int:
    """The status of an MCP request with ``token``: 401 when refused at admission; anything else passed it (a
    ping without a session gets a 4xx of its own, after admission, and creates no session)."""
    request = urllib.request.Request(
        gateway.mcp_url(),
        data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_revocation_on_one_replica_is_refused_by_the_other_within_a_second(tmp_path: Path) -> None:
    url = os.environ["REDIS_URL"]
    # A key prefix of the two replicas' own (it names the channel layer too: they hear each other and nobody
    # else); their keys are deleted afterwards.
    with scoped_prefix(url, "revocation") as prefix:
        settings = {
            "REDIS_URL": url,
            "GATEWAY_REDIS_PREFIX": prefix,
            "GATEWAY_AUTH_CACHE_SECONDS": "30",
            "GATEWAY_SCHEDULER": "off",
        }
        with start_live_gateway(tmp_path, **settings) as a, start_live_gateway(tmp_path, **settings) as b:
            token = a.token
            assert mcp_status(b, token) != 401  # B verified it and remembers it for 30 s
            assert mcp_status(a, token) != 401
            status, body = a.api("POST", "/api/tokens/revoke", {"token": token, "reason": "test"})
            assert status == 200, body
            deadline = time.monotonic() + 1.0
            while mcp_status(b, token) != 401:
                assert time.monotonic() < deadline, "replica B still accepts the revoked token after 1 s"
                time.sleep(0.05)
            assert mcp_status(a, token) == 401
            assert mcp_status(b, b.token) != 401  # another token is untouched
