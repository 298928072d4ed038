"""Catalog-change events: committed writes bump the version and announce it on the channel layer
(the in-memory layer by default, Redis when REDIS_URL is set, as in CI)."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection, transaction

from registry import events, services
from registry.exceptions import InvalidInput
from registry.models import Gateway


@pytest.fixture(autouse=True)
async def _close_thread_connections():
    """sync_to_async runs ORM code in a worker thread with its own connection: close it afterwards,
    or PostgreSQL refuses to drop the test database."""
    yield
    await sync_to_async(close_old_connections_here)()


def close_old_connections_here() -> None:
    connection.close()  # resolved in the worker thread, so it closes that thread's connection


def _create_gateway(name: str) -> Gateway:
    return services.entry_create(Gateway, data={"name": name, "url": "http://127.0.0.1:9/mcp"})


async def _listen():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.CATALOG_GROUP, channel)
    return layer, channel


@pytest.mark.django_db(transaction=True)
async def test_a_committed_write_is_announced_with_the_new_version():
    """After commit, every listener on the catalog group gets catalog.changed with the committed version."""
    layer, channel = await _listen()
    await sync_to_async(_create_gateway)("announced")
    message = await asyncio.wait_for(layer.receive(channel), timeout=5)
    assert message == {"type": events.CATALOG_CHANGED, "version": await sync_to_async(events.catalog_version)()}
    assert message["version"] >= 1


@pytest.mark.django_db(transaction=True)
async def test_a_rolled_back_write_is_not_announced():
    """A write whose transaction rolls back bumps nothing and announces nothing."""
    layer, channel = await _listen()
    before = await sync_to_async(events.catalog_version)()

    def write_then_fail():
        with transaction.atomic():
            _create_gateway("rolled-back")
            raise InvalidInput("abort")

    with pytest.raises(InvalidInput):
        await sync_to_async(write_then_fail)()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(channel), timeout=0.5)
    assert await sync_to_async(events.catalog_version)() == before


@pytest.mark.django_db
def test_the_suite_runs_on_the_database_named_by_database_url(monkeypatch):
    """`make test` with DATABASE_URL=postgres://... really runs on PostgreSQL (CI relies on it)."""
    import os

    url = os.environ.get("DATABASE_URL", "")
    expected = "postgresql" if url.startswith(("postgres://", "postgresql://")) else "sqlite"
    assert connection.vendor == expected
