"""The Django side of per-user upstream credentials (docs/governance.md): the vault the upstream pool asks
(``transports.protocol.upstream_auth.Vault``), reading and writing ``registry.UpstreamCredential`` through the
catalog's selectors and services, and the in-process cache invalidation when a user's credentials change.

The pool asks on a user's first call to a per-user gateway and then every ``CACHE_SECONDS`` at most (another
replica's change reaches this one within that time; a change in this process at once).
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from registry import selectors, services
from registry.models import UpstreamCredential

CACHE_SECONDS = 60.0
CONNECT_PATH = "/accounts/upstreams/"


class DatabaseVault:
    """``Vault`` over the catalog's UpstreamCredential table."""

    async def load(self, gateway: str, user: str) -> dict[str, Any] | None:
        return await sync_to_async(selectors.user_credentials_load, thread_sensitive=False)(
            gateway_name=gateway, username=user
        )

    async def store(self, gateway: str, user: str, credentials: dict[str, Any]) -> None:
        await sync_to_async(services.user_credentials_tokens_store, thread_sensitive=False)(
            gateway_name=gateway, username=user, credentials=credentials
        )

    def connect_hint(self, gateway: str) -> str:
        base = (settings.GATEWAY_PUBLIC_URL or "").rstrip("/")
        return f"{base}{CONNECT_PATH} (or PUT /api/gateways/<id>/my-credentials)"


def _forget(instance: UpstreamCredential) -> None:
    from transports.runtime import current_core

    core = current_core()
    if core is None:
        return
    try:
        gateway = instance.gateway.name
        username = instance.user.get_username()
    except Exception:  # the gateway or user is being deleted too
        core.upstreams.auth.forget()
        return
    core.upstreams.auth.forget(gateway, username)


@receiver(post_save, sender=UpstreamCredential, dispatch_uid="upstream_credential_saved")
def credential_saved(sender: Any, instance: UpstreamCredential, **kwargs: Any) -> None:
    _forget(instance)


@receiver(post_delete, sender=UpstreamCredential, dispatch_uid="upstream_credential_deleted")
def credential_deleted(sender: Any, instance: UpstreamCredential, **kwargs: Any) -> None:
    _forget(instance)
