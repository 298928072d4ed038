"""Revoke a JWT by the token itself or by its jti."""

from typing import Any

from django.core.management.base import CommandError, CommandParser

from registry import auth
from registry.audit import AuditedCommand
from registry.exceptions import InvalidInput


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = "Revoke a bearer token (give the token or its jti); it is refused from then on."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("token", help="The token, or its jti.")
        parser.add_argument("--reason", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            revoked = auth.token_revoke(token_or_jti=options["token"], reason=options["reason"])
        except InvalidInput as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Revoked token {revoked.jti}.")
