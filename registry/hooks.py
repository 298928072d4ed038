"""Signals the catalog sends for other apps to react to (connected in their ``AppConfig.ready()``).

Sent only after the writing transaction commits, so a receiver never sees rolled-back state.
"""

from django.dispatch import Signal

# A gateway was created, or changed in a way that needs its catalog read again (connection settings,
# enabled). Keyword arguments: gateway_id (int), created (bool).
gateway_saved = Signal()

# Someone asked for a gateway's health check or catalog sync now (the admin's "Check now" and "Sync now"):
# federation runs it, off the request when a scheduler runs. Keyword arguments: gateway_id (int).
gateway_check_requested = Signal()
gateway_sync_requested = Signal()

# Tokens were revoked (committed): every process drops the callers it remembers for them (the MCP edge's
# credential cache, within a second on every replica). Keyword arguments: token_ids (list of jti).
token_revoked = Signal()
