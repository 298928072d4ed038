"""gateway_project.daphne_server: daphne's command line without the access log by default, without Twisted's
form parsing and its discarded log line; everything else is daphne's."""

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from daphne.http_protocol import HTTPFactory, WebRequest
from twisted.web.test.requesthelper import DummyChannel

from gateway_project.daphne_server import (
    GatewayCommandLine,
    GatewayHTTPFactory,
    GatewayRequest,
    GatewayServer,
)
from tests.live_gateway import free_port, serving


def test_no_access_log_unless_asked():
    """Verbosity 0 by default (daphne logs each request at 1); --access-log still turns it on."""
    parser = GatewayCommandLine().parser
    assert parser.parse_args(["app:application"]).verbosity == 0
    assert parser.parse_args(["--access-log", "-", "app:application"]).access_log == "-"


def test_server_builds_gateway_requests_without_form_parsing():
    """Server.run() assigns daphne's factory; the server keeps ours, whose requests skip form parsing."""
    server = GatewayServer(application=None, endpoints=["tcp:port=0"])
    server.connections = {}
    server.http_factory = HTTPFactory(server)
    factory = server.http_factory
    assert isinstance(factory, GatewayHTTPFactory)
    assert factory.server is server
    channel = DummyChannel()
    channel.factory = factory
    assert GatewayRequest(channel)._parsePOSTFormSubmission is False
    assert WebRequest(channel)._parsePOSTFormSubmission is True  # what daphne alone would do
    factory.log(GatewayRequest(channel))  # Twisted's access log: nothing, and no error


@contextlib.contextmanager
def serve(tmp_path: Path, *options: str) -> Iterator[tuple[str, Path]]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        "SECRET_KEY": "daphne-server-test-secret-key-0123456789-abcdef",
        "LOG_LEVEL": "WARNING",
    }
    log_path = tmp_path / f"server-{port}.log"
    with serving(port, env, log_path, *options, server="gateway_project.daphne_server") as url:
        yield url, log_path


@pytest.mark.parametrize("options", [(), ("--access-log", "-")])
def test_serves_the_gateway(tmp_path, options):
    """It serves gateway_project.asgi (daphne's Server header included) and logs requests only when asked."""
    with serve(tmp_path, *options) as (url, log_path):
        with urllib.request.urlopen(url + "/health", timeout=5) as response:
            assert response.status == 200
            assert response.headers["Server"] == "daphne"
            assert b'"ok"' in response.read()
        # A form POST reaches the application as it came (Twisted no longer decodes it first).
        request = urllib.request.Request(url + "/mcp", data=b"a=1&b=2", method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code in (401, 415)
    logged = '"GET /health" 200' in log_path.read_text()
    assert logged == bool(options), log_path.read_text()
