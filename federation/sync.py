"""Sync of upstream catalogs into the registry: on schedule, on list_changed, on a gateway change, by
hand (docs/federation.md, "Sync").

``gateway_sync`` reads the upstream (``federation.services.read_upstream``) and hands what it read to
``registry.catalog_sync.gateway_catalog_apply`` (the difference, drift, the run, the health success, in
one transaction); a failed read is recorded as a failed run and a failed health check.

A gateway registered with ``federation.services.gateway_add`` is read once, by gateway_add itself: it
stores the gateway with ``gateway_saved`` not sent, so ``on_gateway_saved`` never syncs it a second time.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from federation import services
from federation.errors import describe_failure
from registry.catalog_sync import sync_failure_record
from registry.choices import SyncTrigger
from registry.exceptions import CatalogError, InvalidInput
from registry.models import Gateway, SyncRun

logger = logging.getLogger(__name__)


def gateway_sync(
    *, gateway: Gateway, trigger: str = SyncTrigger.MANUAL, pool: Any = None, timeout: float | None = None
) -> SyncRun:
    """Read the gateway's upstream and apply the difference to the catalog; InvalidInput with a sentence
    when the upstream cannot be read (recorded as a failed sync run and a failed health check)."""
    timeout = settings.GATEWAY_SYNC_TIMEOUT if timeout is None else timeout
    started = timezone.now()
    try:
        upstream = services.read_upstream(gateway, timeout=timeout, pool=pool)
    except Exception as exc:
        sentence = _sentence(exc, timeout=timeout)
        sync_failure_record(gateway=gateway, trigger=trigger, started_at=started, error=sentence)
        raise InvalidInput(f"Could not sync {gateway.name!r}: {sentence}") from None
    return services.catalog_apply(gateway, upstream, trigger=trigger, started_at=started)


def _sentence(exc: Exception, *, timeout: float) -> str:
    """The failure as a sentence: from the upstream client's own error when read_upstream wrapped one."""
    cause = exc.__cause__
    if isinstance(exc, CatalogError):
        if isinstance(cause, Exception):
            return describe_failure(cause, timeout=timeout)
        return exc.message
    return describe_failure(exc, timeout=timeout)


async def after_list_changed(gateway_name: str, pool: Any = None) -> None:
    """hooks.upstream_lists_changed receiver: sync the gateway now, reading through ``pool``'s connection
    (the one that announced the change: no new connection, handshake or child process)."""

    def sync() -> None:
        from django.db import connection

        try:
            gateway = Gateway.objects.filter(name=gateway_name, enabled=True).first()
            if gateway is not None:
                gateway_sync(gateway=gateway, trigger=SyncTrigger.LIST_CHANGED, pool=pool)
        except CatalogError as exc:  # recorded as a failed run; nobody waits for this answer
            logger.warning("Sync of %r after list_changed failed: %s", gateway_name, exc.message)
        finally:
            connection.close()

    await sync_to_async(sync, thread_sensitive=False)()


def on_gateway_saved(sender: Any = None, *, gateway_id: int, created: bool = False, **kwargs: Any) -> None:
    """registry.hooks.gateway_saved receiver: sync the gateway soon (an enabled one), off the saving request."""
    from federation import scheduler

    if scheduler.scheduler_mode() == "off":  # no background work at all: syncs are run by hand
        return
    if not Gateway.objects.filter(pk=gateway_id, enabled=True).exists():
        return
    try:
        scheduler.enqueue("sync", gateway_id, trigger=SyncTrigger.CHANGE)
    except CatalogError as exc:  # a scheduler that runs the job inline: the failure is recorded already
        logger.warning("Sync of gateway %s after a change failed: %s", gateway_id, exc.message)
