"""Catalog-change events: a version bumped in the writing transaction and announced after commit.

Every process keeps a catalog snapshot for the MCP hot path and rebuilds it when the version it
holds is older than the one announced on the channel-layer group ``CATALOG_GROUP`` (or read from
the database, for a process that missed the message).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import F

from registry.models import CatalogRevision

logger = logging.getLogger(__name__)

CATALOG_GROUP = "catalog"
CATALOG_CHANGED = "catalog.changed"


def catalog_version() -> int:
    """The committed catalog version (0 before the first change)."""
    return CatalogRevision.objects.filter(pk=1).values_list("version", flat=True).first() or 0


def catalog_changed() -> None:
    """Bump the version inside the current transaction; announce it once the transaction commits."""
    if not CatalogRevision.objects.filter(pk=1).update(version=F("version") + 1):
        CatalogRevision.objects.get_or_create(pk=1, defaults={"version": 1})
    transaction.on_commit(_announce)


_local_listeners: list[Callable[[], None]] = []


def add_local_listener(listener: Callable[[], None]) -> None:
    """Call ``listener`` in this process after every committed catalog change (before the
    channel-layer message reaches other processes). Used by the MCP catalog snapshot."""
    if listener not in _local_listeners:
        _local_listeners.append(listener)


def _announce() -> None:
    for listener in list(_local_listeners):
        listener()
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(CATALOG_GROUP, {"type": CATALOG_CHANGED, "version": catalog_version()})
    except Exception:  # the version in the database still tells every process; log and go on
        logger.warning("Could not announce a catalog change on the channel layer", exc_info=True)
