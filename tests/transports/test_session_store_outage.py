"""The shared session store while Redis cannot be reached (issue #16, fault 3; live in
tests/faults/test_replica_faults.py): the store says so with SessionStoreUnavailable, which every adapter answers
like a full store (HTTP 503, a JSON-RPC error naming Redis) instead of a 500; and a replica that cannot join the
channel layer answers a request with that JSON-RPC error, not an exception."""

from __future__ import annotations

import pytest

from tests.live_gateway import free_port
from transports.protocol import jsonrpc
from transports.protocol.core import McpCore
from transports.protocol.replicas import Mesh
from transports.protocol.sessions import SessionLimitReached, SessionStoreUnavailable
from transports.protocol.shared_sessions import RedisSessionStore


class DeadLayer:
    """A channel layer whose server is down."""

    async def new_channel(self) -> str:
        raise ConnectionRefusedError(111, "Connection refused")


def dead_store() -> RedisSessionStore:
    return RedisSessionStore(f"redis://127.0.0.1:{free_port()}/0", Mesh(DeadLayer()))


async def test_creating_a_session_without_redis_is_503_naming_it():
    with pytest.raises(SessionStoreUnavailable) as refused:
        await dead_store().create(
            username="ada",
            scopes=frozenset(),
            server=None,
            protocol_version="2025-11-25",
            client_capabilities={},
            client_info={},
        )
    assert isinstance(refused.value, SessionLimitReached)  # what every adapter already answers with its status
    assert refused.value.status == 503
    assert str(refused.value) == "the session store (Redis) cannot be reached; try again shortly"


async def test_reading_a_session_without_redis_is_503_too():
    with pytest.raises(SessionStoreUnavailable):
        await dead_store().get("some-session-id")


async def test_a_replica_that_cannot_join_the_layer_answers_with_a_json_rpc_error():
    core = McpCore(mesh=Mesh(DeadLayer()))
    with pytest.raises(jsonrpc.JsonRpcError) as refused:
        await core.joined()
    assert refused.value.code == jsonrpc.SERVER_ERROR
    assert (
        refused.value.message == "Service Unavailable: the channel layer (Redis) cannot be reached; try again shortly."
    )
