"""Print a JWT bearer token for a user (the token is the last line of output)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry import auth
from registry.conf import parse_duration
from registry.exceptions import InvalidInput


class Command(BaseCommand):
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

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            expires_in = parse_duration(options["expires_in"]) if options["expires_in"] else None
        except ValueError as exc:
            raise CommandError(f"--expires-in: {exc}") from None
        scopes = " ".join(options["scopes"]) if options["scopes"] else None
        try:
            token = auth.token_issue(username=options["username"], expires_in=expires_in, scopes=scopes)
        except InvalidInput as exc:
            raise CommandError(exc.message) from None
        claims = auth.token_claims(token)
        self.stderr.write(
            f"Token for {claims['sub']} (scopes: {claims['scope']}; jti {claims['jti']}; "
            f"expires at unix time {claims['exp']}):"
        )
        self.stdout.write(token)
