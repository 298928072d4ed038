"""Print a JWT bearer token for a user (the token is the last line of output)."""

from typing import Any

from django.core.management.base import CommandError, CommandParser

from registry import auth
from registry.audit import AuditedCommand
from registry.conf import parse_duration
from registry.exceptions import InvalidInput


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = "Issue a JWT bearer token for USERNAME; the token is printed as the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--expires-in", help="Lifetime such as 30m, 12h, 7d, 2w (default: JWT_DEFAULT_EXPIRES_IN).")
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            metavar="SCOPE",
            help="read, write or call; repeat or separate with commas (default: all the user may have).",
        )
        parser.add_argument("--name", default="", help="What the token is for (shown by token_list and the admin).")
        parser.add_argument(
            "--server",
            metavar="VIRTUAL_SERVER",
            help="Bind the token to this virtual server: it opens only /servers/VIRTUAL_SERVER/mcp (and its sse, "
            "ws and rpc endpoints), not the whole catalog, other servers or the REST API.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            expires_in = parse_duration(options["expires_in"]) if options["expires_in"] else None
        except ValueError as exc:
            raise CommandError(f"--expires-in: {exc}") from None
        except OverflowError:
            raise CommandError(f"--expires-in: {options['expires_in']!r} is too long.") from None
        scopes = " ".join(options["scopes"]) if options["scopes"] else None
        try:
            issued = auth.issued_token_create(
                username=options["username"],
                expires_in=expires_in,
                scopes=scopes,
                name=options["name"],
                server=options["server"],
                issued_by="manage.py issue_token",
            )
        except InvalidInput as exc:
            raise CommandError(exc.message) from None
        claims = auth.token_claims(issued.token)
        bound = f"; only virtual server {claims['srv']}" if "srv" in claims else ""
        self.stderr.write(
            f"Token for {claims['sub']} (scopes: {claims['scope']}{bound}; jti {claims['jti']}; "
            f"expires at unix time {claims['exp']}):"
        )
        self.stdout.write(issued.token)
