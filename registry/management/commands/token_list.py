"""A table of the issued tokens (never the tokens themselves)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from registry import auth
from registry.exceptions import InvalidInput

COLUMNS = ("JTI", "USER", "NAME", "SCOPES", "SERVER", "ISSUED", "EXPIRES", "STATE")


def _when(value: Any) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M")


class Command(BaseCommand):
    help = (
        "List issued tokens, newest first: id (jti), user, name, scopes, virtual server, issued, expires and "
        "state. Revoke one with `manage.py revoke_token JTI`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="Only this user's tokens.")
        parser.add_argument("--state", choices=["active", "expired", "revoked"], help="Only tokens in this state.")
        parser.add_argument("--server", help="Only tokens bound to this virtual server.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            tokens = auth.issued_token_list(username=options["user"], state=options["state"], server=options["server"])
        except InvalidInput as exc:  # pragma: no cover - argparse checks the state's choices first
            raise CommandError(exc.message) from None
        rows = [
            (
                token.jti,
                token.user.get_username(),
                token.name or "-",
                ",".join(token.scope_list),
                token.server.name if token.server else "(all)",
                _when(token.issued_at),
                _when(token.expires_at),
                str(token.state),
            )
            for token in tokens
        ]
        if not rows:
            self.stdout.write("No tokens. Issue one with `manage.py issue_token USERNAME` or in the admin.")
            return
        widths = [max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
        for row in [COLUMNS, *rows]:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
