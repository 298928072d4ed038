"""The catalog's source for the protocol core: the database, and the notices of its changes.

Rows come from ``registry.selectors.catalog_rows`` in a worker thread. Changes made in this process
invalidate the snapshot on commit (``registry.events`` local listener, wired in ``runtime``); changes
made by other processes arrive as `catalog.changed` on the channel-layer group, and a slow poll of
the catalog version catches anything missed (a fast one with the in-memory layer, which carries no
other process's notices).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async

POLL_SECONDS = 30.0  # with a Redis channel layer, which carries every process's change notices
LOCAL_POLL_SECONDS = 2.0  # with the in-memory layer: changes by other processes (manage.py) arrive by polling


def _read_rows() -> dict[str, Any]:
    from registry.selectors import catalog_rows

    return _closing(catalog_rows)


def _read_version() -> int:
    from registry.events import catalog_version

    return _closing(catalog_version)


def _closing(read: Callable[[], Any]) -> Any:
    """Run a read in a worker thread and close that thread's connection: rebuilds are rare, and an
    idle connection per pool thread would only hold database slots."""
    from django.db import connection

    try:
        return read()
    finally:
        connection.close()


class DatabaseSource:
    """``CatalogSource`` over the registry's tables and the channel layer."""

    async def rows(self) -> dict[str, Any]:
        # Not thread-sensitive: a rebuild may start while a catalog write holds that thread.
        return await sync_to_async(_read_rows, thread_sensitive=False)()

    async def watch(self, version: Callable[[], int], invalidate: Callable[[], None]) -> None:
        """Follow catalog.changed on the channel layer; poll the version when it is quiet."""
        from channels.layers import InMemoryChannelLayer, get_channel_layer

        from registry.events import CATALOG_GROUP

        layer = get_channel_layer()
        poll = POLL_SECONDS if layer is not None and not isinstance(layer, InMemoryChannelLayer) else LOCAL_POLL_SECONDS
        channel: str | None = None
        # One receive stays pending across quiet periods: cancelling it would make the Redis pub/sub
        # layer forget the channel (and its group membership).
        receiver: asyncio.Future[dict[str, Any]] | None = None
        try:
            while True:
                message = None
                if layer is not None:
                    if channel is None:
                        channel = await layer.new_channel()
                        await layer.group_add(CATALOG_GROUP, channel)
                    if receiver is None:
                        receiver = asyncio.ensure_future(layer.receive(channel))
                    done, _ = await asyncio.wait({receiver}, timeout=poll)
                    if done:
                        finished, receiver = receiver, None
                        message = finished.result()
                else:
                    await asyncio.sleep(poll)
                if message is not None:
                    if int(message.get("version", -1)) != version():
                        invalidate()
                elif await sync_to_async(_read_version, thread_sensitive=False)() != version():
                    invalidate()
        finally:
            if receiver is not None:
                receiver.cancel()
