"""daphne, minus the per-request work nobody reads: `python -m gateway_project.daphne_server [daphne options] APP`.

The command line is daphne's own (`daphne --help` describes every option), with two changes:

- No access log unless asked for: the default verbosity is 0 instead of 1, and daphne writes an access log
  line per request only at verbosity >= 1 or with `--access-log` (`--access-log -` for stdout, or a file
  path; `make run ACCESS_LOG=-`). uvicorn is run the same way (`--no-access-log`). At verbosity 0 and 1
  daphne's other messages go through Django's `LOGGING` (root at WARNING) just the same.
- Its HTTP requests skip two things Twisted does for every request and daphne never uses:
  - form parsing: Twisted parses every POST's `Content-Type` with the standard library's `email` package
    (and would decode url-encoded or multipart bodies into `request.args`) before daphne hands the raw body
    to the ASGI application. `parsePOSTFormSubmission=False`, a documented `twisted.web.http.Request`
    argument, turns that off.
  - Twisted's own access log: `HTTPFactory.log` formats a combined-log line per request into Twisted's
    log, which daphne discards at verbosity <= 1 (and Django's root logger at WARNING drops at 2).
    daphne's own access log (`--access-log`) is unaffected.

Together they took about a fifth of the gateway's CPU per tools/call (docs/performance.md). Everything
else (WebSocket, timeouts, proxy headers, root path, the `Server` header) is daphne's code unchanged.
"""

from __future__ import annotations

import sys
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server


class GatewayRequest(WebRequest):
    """daphne's request, without Twisted's form parsing (daphne passes the raw body on)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(*args, **kwargs)


class GatewayHTTPFactory(HTTPFactory):
    """daphne's HTTP factory, building `GatewayRequest`s and writing no Twisted access-log line."""

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = GatewayRequest
        return protocol

    def log(self, request: Any) -> None:
        """Twisted's access log (combined format into Twisted's log, discarded by daphne): not written."""


class GatewayServer(Server):
    """daphne's server with `GatewayHTTPFactory`: `Server.run()` builds daphne's factory and assigns it to
    `http_factory`; this property puts ours (same constructor, same server) in its place."""

    @property
    def http_factory(self) -> HTTPFactory:
        return self._gateway_http_factory

    @http_factory.setter
    def http_factory(self, factory: HTTPFactory) -> None:
        self._gateway_http_factory = (
            factory if isinstance(factory, GatewayHTTPFactory) else GatewayHTTPFactory(factory.server)
        )


class GatewayCommandLine(CommandLineInterface):
    """daphne's command line with `GatewayServer` and verbosity 0 (no access log) by default."""

    description = "MCP Gateway's daphne: " + CommandLineInterface.description
    server_class = GatewayServer

    def __init__(self) -> None:
        super().__init__()
        self.parser.set_defaults(verbosity=0)


def main(argv: list[str] | None = None) -> None:
    GatewayCommandLine().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
