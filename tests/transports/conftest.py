"""The live gateway of the protocol tests (tests/live_gateway.py): one for the session, which real MCP clients
talk to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.live_gateway import LiveGateway, start_live_gateway


@pytest.fixture(scope="session")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """One gateway process for the session, with 5 items per list page (catalog entries are added by tests)."""
    with start_live_gateway(tmp_path_factory.mktemp("live-gateway"), GATEWAY_MCP_PAGE_SIZE="5") as gateway:
        yield gateway
