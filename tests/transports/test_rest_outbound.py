"""Outbound safety of REST tools and fetched documents (docs/tool-backends.md "Outbound safety"):
private, loopback, link-local, multicast, reserved and unspecified addresses are refused unless
GATEWAY_OUTBOUND_ALLOW_PRIVATE is on, checked on the address actually connected to (no DNS-rebinding
window); redirects are followed hop by hop under the same rules, without credentials to another
origin; response bodies are bounded. Spec: RFC 9110 section 15.4 (redirection)."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver

from tests.fixtures.http_api import BEARER_TOKEN, start_http_api
from tests.fixtures.servers import free_port
from tests.transports.rest_gateway import gateway, http_api, text_of, world  # noqa: F401
from transports.protocol.backends import outbound
from transports.protocol.backends.outbound import (
    AddressRefused,
    GuardedResolver,
    OutboundError,
    address_kind,
    fetch_document,
    guarded_socket_factory,
    masked,
)
from transports.protocol.backends.rest import RestBackend

SETTING = "GATEWAY_OUTBOUND_ALLOW_PRIVATE=true"


class FakeDns(AbstractResolver):
    """A resolver answering from a table: stands in for DNS records the test controls."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self.asked: list[str] = []

    async def resolve(self, host, port=0, family=socket.AF_INET):
        self.asked.append(host)
        if host not in self.records:
            raise OSError(f"no such host {host}")
        return [
            {"hostname": host, "host": ip, "port": port, "family": family, "proto": 0, "flags": 0}
            for ip in self.records[host]
        ]

    async def close(self) -> None:
        pass


# -- the policy ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata endpoints live here
        ("fe80::1%eth0", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),  # reserved for future use (Python counts it private too)
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_kinds(address, kind):
    assert address_kind(address) == kind


async def test_the_resolver_drops_private_answers_and_refuses_a_name_with_none_left():
    """Checked on every resolution: a public answer is kept, a private one beside it is dropped, and a
    name whose every answer is private is refused with the name and the address."""
    resolver = GuardedResolver(FakeDns({"mixed.test": ["8.8.8.8", "10.0.0.7"], "inside.test": ["10.0.0.7"]}))
    assert [r["host"] for r in await resolver.resolve("mixed.test", 443)] == ["8.8.8.8"]
    with pytest.raises(AddressRefused, match=r"inside\.test resolves to 10\.0\.0\.7, which is a private address"):
        await resolver.resolve("inside.test", 443)


def test_the_socket_factory_refuses_private_addresses_it_is_asked_to_connect_to():
    """The last check, on the very address connect() would use (IP literals never meet a resolver)."""
    make = guarded_socket_factory()
    with pytest.raises(AddressRefused, match=r"127\.0\.0\.1 is a loopback address"):
        make((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)))
    with pytest.raises(AddressRefused, match="link-local"):
        make((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80)))
    make((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 80))).close()


def test_messages_hide_credentials_in_urls():
    url = "https://bob:pw@api.example.com/x?api_key=K&token=T&page=2&X-Sig=s"
    assert masked(url, ["X-Sig"]) == "https://api.example.com/x?api_key=***&token=***&page=2&X-Sig=***"


# -- private addresses through the gateway ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_private_address_is_refused_without_the_setting(gateway):  # noqa: F811
    """The backend made with allow_private=False (production's default): an isError result that says
    why and names the setting, and the API never sees the request."""
    gateway.use(RestBackend(allow_private=False))
    await gateway.add_tool("inside", {"url": gateway.api.url("/flaky/private?fail=0")})
    result = await gateway.call("inside")
    assert result["isError"] is True
    assert "Refused to connect: 127.0.0.1 is a loopback address" in text_of(result)
    assert SETTING in text_of(result)
    assert gateway.api.state.count("flaky:private") == 0


@pytest.mark.django_db(transaction=True)
async def test_a_name_that_resolves_to_loopback_is_refused(gateway):  # noqa: F811
    gateway.use(RestBackend(allow_private=False))
    await gateway.add_tool("local", {"url": f"http://localhost:{gateway.api.port}/json"})
    result = await gateway.call("local")
    assert result["isError"] is True
    assert "localhost resolves to" in text_of(result)
    assert "loopback" in text_of(result)


@pytest.mark.django_db(transaction=True)
async def test_the_check_is_on_the_address_the_name_resolves_to_when_connecting(gateway):  # noqa: F811
    """DNS rebinding: a public-looking name whose record now points at 127.0.0.1 is refused when the
    connection is made; nothing checked earlier (when the tool was saved) is trusted."""
    dns = FakeDns({"api.rebind.test": ["127.0.0.1"]})
    gateway.use(RestBackend(allow_private=False, resolver_factory=lambda: dns))
    await gateway.add_tool("rebound", {"url": f"http://api.rebind.test:{gateway.api.port}/flaky/rebind?fail=0"})
    result = await gateway.call("rebound")
    assert "api.rebind.test resolves to 127.0.0.1, which is a loopback address" in text_of(result)
    assert dns.asked == ["api.rebind.test"]
    assert gateway.api.state.count("flaky:rebind") == 0


@pytest.mark.django_db(transaction=True)
async def test_the_test_settings_allow_private_addresses(gateway):  # noqa: F811
    """The backend made from settings (GATEWAY_OUTBOUND_ALLOW_PRIVATE=true in test_settings) reaches
    the loopback API."""
    assert gateway.backend.allow_private is True
    await gateway.add_tool("inside", {"url": gateway.api.url("/json")})
    assert (await gateway.call("inside"))["structuredContent"]["count"] == 2


# -- redirects ---------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_redirects_are_followed(gateway):  # noqa: F811
    await gateway.add_tool("chain", {"url": gateway.api.url("/redirect/chain/3")})
    assert (await gateway.call("chain"))["structuredContent"] == {"arrived": True, "method": "GET"}


@pytest.mark.django_db(transaction=True)
async def test_a_redirect_to_a_private_address_is_refused(gateway):  # noqa: F811
    """Every hop meets the address check: the test API is exempted for the first hop, and a redirect
    from it to another loopback port, or to a name that resolves inside, is refused."""
    dns = FakeDns({"internal.test": ["10.0.0.7"]})
    gateway.use(
        RestBackend(allow_private=False, exempt=[("127.0.0.1", gateway.api.port)], resolver_factory=lambda: dns)
    )
    await gateway.add_tool("hop", {"url": gateway.api.url("/redirect{?to}")})
    await gateway.add_tool("direct", {"url": gateway.api.url("/json")})
    assert (await gateway.call("direct"))["structuredContent"]["count"] == 2
    result = await gateway.call("hop", {"to": f"http://127.0.0.1:{free_port()}/admin"})
    assert result["isError"] is True
    assert "127.0.0.1 is a loopback address" in text_of(result)
    assert SETTING in text_of(result)
    result = await gateway.call("hop", {"to": "http://internal.test/metadata"})
    assert "internal.test resolves to 10.0.0.7, which is a private address" in text_of(result)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("target", ["file:///etc/passwd", "gopher://example.com/", "ftp://example.com/x"])
async def test_a_redirect_to_another_scheme_is_refused(gateway, target):  # noqa: F811
    await gateway.add_tool("hop", {"url": gateway.api.url("/redirect{?to}")})
    result = await gateway.call("hop", {"to": target})
    assert result["isError"] is True
    assert f"redirected to a {target.partition(':')[0]}: URL; only http and https redirects are followed" in (
        text_of(result)
    )


@pytest.mark.django_db(transaction=True)
async def test_a_redirect_loop_is_bounded(gateway):  # noqa: F811
    """At most GATEWAY_OUTBOUND_MAX_REDIRECTS redirects (here 5, then 2) are followed."""
    await gateway.add_tool("loop", {"url": gateway.api.url("/redirect/loop")})
    result = await gateway.call("loop")
    assert result["isError"] is True
    assert "redirected more than 5 times (the limit is GATEWAY_OUTBOUND_MAX_REDIRECTS)" in text_of(result)
    assert gateway.api.state.count("redirect-loop") == 6
    gateway.use(RestBackend(allow_private=True, max_redirects=2))
    await gateway.call("loop")
    assert gateway.api.state.count("redirect-loop") == 6 + 3


@pytest.mark.django_db(transaction=True)
async def test_303_turns_a_post_into_a_get_and_307_keeps_it(gateway):  # noqa: F811
    """RFC 9110 15.4.4 and 15.4.8: after 303 the client GETs the new location; 307 repeats the
    method and body."""
    config = {"url": gateway.api.url("/redirect{?to,status}"), "method": "POST"}
    await gateway.add_tool("hop", config)
    echo = (await gateway.call("hop", {"to": "/echo/after", "status": 303, "x": 1}))["structuredContent"]
    assert (echo["method"], echo["body"]) == ("GET", "")
    echo = (await gateway.call("hop", {"to": "/echo/after", "status": 307, "x": 1}))["structuredContent"]
    assert (echo["method"], echo["body"]) == ("POST", '{"x":1}')


@pytest.mark.django_db(transaction=True)
async def test_credentials_are_not_sent_to_another_origin(gateway):  # noqa: F811
    """A same-origin redirect keeps the Authorization header; a redirect to another origin (another
    port) drops it, and an API key header with it, for the rest of the chain."""
    other = start_http_api()
    try:
        auth = {"type": "bearer"}
        await gateway.add_tool(
            "hop", {"url": gateway.api.url("/redirect{?to}"), "auth": auth}, credentials={"token": BEARER_TOKEN}
        )
        key = {"type": "api_key", "in": "header", "name": "X-API-Key"}
        await gateway.add_tool(
            "keyhop", {"url": gateway.api.url("/redirect{?to}"), "auth": key}, credentials={"key": "k"}
        )
        same = (await gateway.call("hop", {"to": "/echo/same"}))["structuredContent"]
        assert same["headers"]["Authorization"] == f"Bearer {BEARER_TOKEN}"
        elsewhere = (await gateway.call("hop", {"to": other.url("/echo/other")}))["structuredContent"]
        assert elsewhere["path"] == "/echo/other"
        assert "Authorization" not in elsewhere["headers"]
        elsewhere = (await gateway.call("keyhop", {"to": other.url("/echo/other")}))["structuredContent"]
        assert "X-API-Key" not in elsewhere["headers"]
        # Sent elsewhere and back: the credentials stay dropped.
        back = f"/redirect?to={gateway.api.url('/echo/back')}"
        returned = (await gateway.call("hop", {"to": other.url(back)}))["structuredContent"]
        assert returned["path"] == "/echo/back"
        assert "Authorization" not in returned["headers"]
    finally:
        other.stop()


# -- response size ---------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("chunked", ["0", "1"])
async def test_a_response_over_the_tools_bound_is_refused(gateway, chunked):  # noqa: F811
    """Refused whether the size is announced (Content-Length) or only found while reading (chunked)."""
    await gateway.add_tool(
        "big", {"url": gateway.api.url(f"/big?bytes=5000&chunked={chunked}"), "max_response_bytes": 1000}
    )
    result = await gateway.call("big")
    assert result["isError"] is True
    assert "is larger than 1000 bytes, the limit set by the tool's max_response_bytes" in text_of(result)


@pytest.mark.django_db(transaction=True)
async def test_a_response_over_the_gateways_bound_names_the_setting(gateway):  # noqa: F811
    gateway.use(RestBackend(allow_private=True, max_response_bytes=2048))
    await gateway.add_tool("big", {"url": gateway.api.url("/big?bytes=4096")})
    await gateway.add_tool("fits", {"url": gateway.api.url("/big?bytes=2048")})
    await gateway.add_tool("peek", {"url": gateway.api.url("/big?bytes=4096"), "method": "HEAD"})
    assert "2048 bytes, the limit set by GATEWAY_OUTBOUND_MAX_RESPONSE_BYTES" in text_of(await gateway.call("big"))
    assert (await gateway.call("fits"))["content"][0]["type"] == "resource"
    assert text_of(await gateway.call("peek")).startswith("HTTP 200 OK from HEAD")  # a length, not a body


# -- fetch_document (the OpenAPI importer's fetch) -----------------------------------------------------------


async def test_fetch_document_returns_the_body_and_its_content_type(http_api):  # noqa: F811
    body, content_type = await fetch_document(http_api.url("/json"), allow_private=True, max_bytes=10_000, timeout=10)
    assert content_type == "application/json"
    assert b'"count": 2' in body or b'"count":2' in body


@pytest.mark.parametrize(
    ("path", "options", "message"),
    [
        ("/json", {"allow_private": False}, "127.0.0.1 is a loopback address"),
        ("/big?bytes=5000", {"max_bytes": 1000}, "is larger than 1000 bytes"),
        ("/status/404", {}, "HTTP 404 Not Found from GET"),
        ("/redirect?to=file:///etc/passwd", {}, "only http and https redirects are followed"),
        ("/redirect/loop", {}, "redirected more than 5 times"),
    ],
)
async def test_fetch_document_refuses_with_a_clear_error(http_api, path, options, message):  # noqa: F811
    kwargs = {"allow_private": True, "max_bytes": 10_000, "timeout": 10, **options}
    with pytest.raises(OutboundError, match=message):
        await fetch_document(http_api.url(path), **kwargs)


async def test_fetch_document_only_takes_http_urls():
    with pytest.raises(OutboundError, match="is not an http:// or https:// URL"):
        await fetch_document("file:///etc/passwd", allow_private=True, max_bytes=1000, timeout=1)


async def test_fetch_document_is_bounded_in_time(http_api):  # noqa: F811
    with pytest.raises(OutboundError, match=r"did not answer within 0\.2 seconds"):
        await fetch_document(http_api.url("/slow?seconds=30"), allow_private=True, max_bytes=1000, timeout=0.2)
    assert outbound.ALLOW_PRIVATE_SETTING == "GATEWAY_OUTBOUND_ALLOW_PRIVATE"
