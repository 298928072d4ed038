"""Receivers of the governance parts that live on the transports' side (connected in ``TransportsConfig.ready``):

- ``tool_called``: every finished tools/call goes to the audit log's bounded queue (``registry.audit.call_log()``);
  a dictionary lookup and an append on the call's path, the write happens off it;
- ``token_revoked``: a revoked token's cached callers are dropped in this process at once and, over the
  channel layer's AUTH_GROUP, in every other process (``transports.edge.CredentialCache``).
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings

from registry import audit
from transports import edge
from transports.protocol.hooks import ToolCalled

logger = logging.getLogger(__name__)


async def tool_called(record: ToolCalled) -> None:
    """Queue the call for the audit log (never blocks: a full queue drops and counts)."""
    if settings.GATEWAY_AUDIT_CALLS:
        audit.call_log().offer(record)


def token_revoked(sender: Any = None, *, token_ids: list[str], **kwargs: Any) -> None:
    """Drop the revoked tokens' callers here, and announce the revocation to the other processes."""
    edge.credentials.forget_tokens(token_ids)
    from channels.layers import InMemoryChannelLayer, get_channel_layer

    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return  # no other process listens
    try:
        async_to_sync(layer.group_send)(edge.AUTH_GROUP, {"type": edge.AUTH_REVOKED, "token_ids": list(token_ids)})
    except Exception:  # the other processes still refuse it once their cache entry expires
        logger.warning("Could not announce a token revocation on the channel layer", exc_info=True)
