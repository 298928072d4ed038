"""The edge while the catalog database cannot be reached (issue #16, fault 4; the live version is
tests/faults/test_postgres_outage.py): a caller whose credentials were verified before the outage is still
admitted after its cache entry expired, so MCP reads keep being served from the catalog snapshot; a credential
never verified gets 503 with a JSON-RPC-ready sentence, not a 500; and the stand-in is bounded (in time, and by
the credential's own expiry)."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError

from registry import auth
from tests.factories import UserFactory
from transports import edge

HEADERS = {"host": "localhost"}
TTL = 0.05  # GATEWAY_AUTH_CACHE_SECONDS here: entries expire almost at once


def _close_connection() -> None:
    from django.db import connection

    connection.close()


@pytest.fixture
async def database(monkeypatch, settings, transactional_db):
    """{"down": bool}: while down, verifying a credential fails as an unreachable PostgreSQL makes it fail."""
    settings.GATEWAY_AUTH_CACHE_SECONDS = TTL
    edge.credentials.clear()
    state = {"down": False}
    verify = auth.principal_from_authorization

    def principal_from_authorization(header, *, audiences=None):
        if state["down"]:
            raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')
        return verify(header, audiences=audiences)

    monkeypatch.setattr(auth, "principal_from_authorization", principal_from_authorization)
    yield state
    edge.credentials.clear()
    await sync_to_async(_close_connection)()


async def _token(**options) -> str:
    await sync_to_async(UserFactory)(username="ada", is_staff=True)
    return "Bearer " + await sync_to_async(auth.token_issue)(username="ada", **options)


async def test_a_caller_verified_before_the_outage_is_still_admitted(database):
    token = await _token()
    assert (await edge.admit({**HEADERS, "authorization": token}, None)).username == "ada"
    await asyncio.sleep(TTL * 2)  # the cache entry has expired: admitting asks the database again
    database["down"] = True
    caller = await edge.admit({**HEADERS, "authorization": token}, None)
    assert caller.username == "ada"
    assert caller.scopes == frozenset({"read", "write", "call"})


async def test_a_credential_never_verified_gets_503_not_a_crash(database):
    token = await _token()
    database["down"] = True
    with pytest.raises(edge.EdgeRefused) as refused:
        await edge.admit({**HEADERS, "authorization": token}, None)
    assert refused.value.status == 503
    assert refused.value.message == edge.DATABASE_DOWN
    assert (b"retry-after", b"5") in refused.value.headers


async def test_the_stand_in_lasts_only_so_long(database, monkeypatch):
    monkeypatch.setattr(edge, "STALE_AUTH_SECONDS", TTL)
    token = await _token()
    await edge.admit({**HEADERS, "authorization": token}, None)
    await asyncio.sleep(TTL * 3)  # expired longer ago than STALE_AUTH_SECONDS
    database["down"] = True
    with pytest.raises(edge.EdgeRefused) as refused:
        await edge.admit({**HEADERS, "authorization": token}, None)
    assert refused.value.status == 503


async def test_a_token_that_expired_meanwhile_is_not_admitted(database, settings):
    settings.JWT_LEEWAY = 0
    # exp is in whole seconds: a lifetime of 3 s leaves at least 2 for the first admission on a busy machine
    # (1 s left none when issuing and admitting straddled a second boundary late).
    token = await _token(expires_in=timedelta(seconds=3))
    await edge.admit({**HEADERS, "authorization": token}, None)
    await asyncio.sleep(3.2)
    database["down"] = True
    with pytest.raises(edge.EdgeRefused) as refused:
        await edge.admit({**HEADERS, "authorization": token}, None)
    assert refused.value.status == 503


async def test_a_database_that_does_not_answer_is_waited_for_only_so_long(database, monkeypatch):
    """A verification that hangs (a partition drops the packets: no error, no answer) is given up after
    VERIFY_TIMEOUT; the caller verified before is admitted, and for DATABASE_RETRY_SECONDS the next requests do
    not wait for the database again."""
    monkeypatch.setattr(edge, "VERIFY_TIMEOUT", 0.2)
    token = await _token()
    await edge.admit({**HEADERS, "authorization": token}, None)
    await asyncio.sleep(TTL * 2)
    hang = threading.Event()
    monkeypatch.setattr(auth, "principal_from_authorization", lambda header, *, audiences=None: hang.wait(10))
    try:
        started = time.monotonic()
        assert (await edge.admit({**HEADERS, "authorization": token}, None)).username == "ada"
        assert time.monotonic() - started < 2
        started = time.monotonic()
        for _ in range(20):
            assert (await edge.admit({**HEADERS, "authorization": token}, None)).username == "ada"
        assert time.monotonic() - started < 0.5  # no waiting in turn behind the hung verification
    finally:
        hang.set()
