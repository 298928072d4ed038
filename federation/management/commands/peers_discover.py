"""Run peer discovery once and print what it found."""

from typing import Any

from django.core.management.base import CommandError, CommandParser

from federation import peers
from registry.audit import AuditedCommand


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = (
        "Read the well-known documents of GATEWAY_PEERS and the approved peers, follow the peers they list "
        "(up to GATEWAY_DISCOVERY_MAX_DEPTH hops) and record each one; prints found, new, failed and refused peers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--approve-all", action="store_true", help="Approve every pending peer reached (each becomes a gateway)."
        )
        parser.add_argument("--timeout", type=float, default=peers.FETCH_TIMEOUT, help="Seconds per peer.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["timeout"] <= 0:
            raise CommandError("--timeout must be a positive number of seconds.")
        report = peers.peers_discover(timeout=options["timeout"], approve_all=options["approve_all"])
        for outcome in report.peers:
            mark = "new" if outcome.created else "   "
            via = f" via {outcome.discovered_via}" if outcome.discovered_via else ""
            if outcome.ok:
                state = "approved now" if outcome.approved else outcome.status
                line = f"found  {mark} {outcome.url} ({outcome.name or 'unnamed'}), depth {outcome.depth}{via}: {state}"
                self.stdout.write(line + (f"; {outcome.error}" if outcome.error else ""))
            else:
                self.stdout.write(f"failed {mark} {outcome.url}, depth {outcome.depth}{via}: {outcome.error}")
        for refusal in report.refused:
            via = f" (listed by {refusal.discovered_via})" if refusal.discovered_via else ""
            self.stdout.write(f"refused     {refusal.url}{via}: {refusal.reason}")
        if not report.peers and not report.refused:
            self.stdout.write("No peers to discover: set GATEWAY_PEERS (or approve a peer, or turn on mDNS).")
        self.stdout.write(f"Discovery: {report.summary()}.")
        if report.failed:
            raise CommandError(f"{len(report.failed)} of {len(report.peers)} peer(s) could not be read (see above).")
