"""The fuzz suite's gateway and Hypothesis profiles.

One live gateway for the whole folder (daphne with its own SQLite database and in-memory channel layer, so the
suite is marked backend_independent in tests/conftest.py): the project's fixture upstream as 'fx', a wrapped
function tool that checks its arguments against its input schema, a local resource and a local prompt, and a
virtual server 'fz' over all of them. Tools time out after a few seconds, so "never a hang" has a bound.

Profiles (MCPGW_FUZZ_PROFILE): `ci` (the default, what `make test` runs: 100 examples per transport,
derandomized, so a failure reproduces from the same seed on any machine) and `long` (by hand: 2000 examples per
transport, random seeds, and Hypothesis's example database under .hypothesis/, so a failure found once is
replayed first the next time). MCPGW_FUZZ_EXAMPLES overrides either profile's count.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.fixtures.servers import running_upstream
from tests.fuzz.wire import MAX_BODY, FuzzGateway, read_catalog
from tests.live_gateway import start_live_gateway

PROFILE_ENV = "MCPGW_FUZZ_PROFILE"
TOOL_TIMEOUT = "4"  # seconds: GATEWAY_TOOL_TIMEOUT, the gateway's own bound on a call

_common = {
    "deadline": None,  # a live gateway's latency is not the property under test; the exchange timeout is
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    "print_blob": True,
}
settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("MCPGW_FUZZ_EXAMPLES", "100")),
    derandomize=True,
    database=None,
    **_common,
)
settings.register_profile(
    "long", max_examples=int(os.environ.get("MCPGW_FUZZ_EXAMPLES", "2000")), derandomize=False, **_common
)
settings.load_profile(os.environ.get(PROFILE_ENV, "ci"))


@pytest.fixture(scope="session")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzGateway]:
    """The gateway every fuzz test talks to, with its catalog read back over MCP."""
    state = tmp_path_factory.mktemp("fuzz-gateway")
    with (
        running_upstream("streamable-http", era="auto") as upstream,
        start_live_gateway(
            state,
            PYTHONUNBUFFERED="1",  # the log is read after each test for tracebacks
            GATEWAY_TOOL_TIMEOUT=TOOL_TIMEOUT,
            GATEWAY_MAX_BODY_BYTES=str(MAX_BODY),
            GATEWAY_MCP_PAGE_SIZE="4",
            GATEWAY_SSE_KEEPALIVE="1",
            GATEWAY_FUNCTION_TOOLS="tests.fixtures.functions.*",
        ) as live,
    ):
        assert "Registered 'fx'" in live.manage("gateway_add", "fx", "--url", upstream.url)
        wrapped = '{"function": "tests.fixtures.functions.add"}'  # checks its arguments against its schema
        live.manage("tool_add", "wrapped_add", "--kind", "function", "--config", wrapped)
        for path, body in (
            ("/api/resources", {"uri": "file:///fuzz.txt", "name": "fuzz", "mime_type": "text/plain", "text": "hi"}),
            (
                "/api/prompts",
                {"name": "greet", "arguments": [{"name": "who", "required": True}], "template": "Hello {{ who }}!"},
            ),
            ("/api/servers", {"name": "fz", "gateways": ["fx"], "tools": ["wrapped_add"], "prompts": ["greet"]}),
        ):
            status, answer = live.api("POST", path, body)
            assert status == 201, (path, answer)
        gateway = FuzzGateway(live)
        gateway.catalog = read_catalog(gateway)
        yield gateway
        gateway.assert_no_traceback()


@pytest.fixture(autouse=True)
def _no_traceback_in_the_gateway_log(fuzz_gateway: FuzzGateway) -> Iterator[None]:
    """A traceback the gateway logs fails the test during which it was written."""
    fuzz_gateway.assert_no_traceback()
    yield
    fuzz_gateway.assert_no_traceback()
