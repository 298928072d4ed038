"""Re-encrypt every stored secret with the first key of GATEWAY_ENCRYPTION_KEYS."""

from typing import Any

from django.core.management.base import CommandError

from registry import services
from registry.audit import AuditedCommand
from registry.exceptions import SecretError


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = "Re-encrypt stored gateway and tool credentials with the newest (first) key in GATEWAY_ENCRYPTION_KEYS."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            count = services.secrets_rotate()
        except SecretError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Re-encrypted the credentials of {count} gateway(s) and tool(s) with the first key.")
