"""Streamable HTTP specifics: sessions, SSE polling, the standalone GET stream, failures."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.transports.upstream.conftest import ServerProcess, eventually, make_config
from tests.transports.upstream.fake_upstream import INIT_RESULT, FakeUpstream, sse_event, sse_response
from transports.protocol.upstream import UpstreamError, UpstreamUnavailable, create_client
from transports.protocol.upstream.streamable_http import StreamableHttpClient


def http_client(url: str, **overrides: Any) -> StreamableHttpClient:
    client = create_client(make_config("streamable-http", url, **overrides))
    assert isinstance(client, StreamableHttpClient)
    return client


@pytest.fixture
async def sdk(http_server: ServerProcess) -> AsyncIterator[StreamableHttpClient]:
    client = http_client(http_server.url)
    await client.connect()
    yield client
    await client.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


async def echo(client: StreamableHttpClient, text: str) -> str:
    result = await client.request("tools/call", {"name": "echo", "arguments": {"text": text}})
    return str(result["content"][0]["text"])


async def raw_post(url: str, session_id: str, message: dict[str, Any]) -> int:
    headers = {
        "Accept": "application/json, text/event-stream",
        "Mcp-Session-Id": session_id,
        "MCP-Protocol-Version": "2025-11-25",
    }
    async with aiohttp.ClientSession() as http, http.post(url, json=message, headers=headers) as response:
        return response.status


async def test_expired_session_is_reinitialized_once(
    sdk: StreamableHttpClient, http_server: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    old = sdk.session_id
    assert old
    async with aiohttp.ClientSession() as http, http.delete(http_server.url, headers={"Mcp-Session-Id": old}) as r:
        assert r.status == 200  # the server forgets the session: our next request gets 404
    with caplog.at_level(logging.INFO, logger="transports.protocol.upstream"):
        texts = await asyncio.gather(*(echo(sdk, f"again {i}") for i in range(5)))
    assert texts == [f"again {i}" for i in range(5)]
    assert sdk.session_id not in (None, old)
    assert sdk.connected
    assert sum("re-initializing" in record.message for record in caplog.records) == 1


async def test_sse_polling_stream_is_resumed_with_last_event_id(sdk: StreamableHttpClient) -> None:
    """The `poll` tool closes its POST stream after the priming event (retry: 100 ms) and goes on
    working; the response only reaches a client that reconnects with GET + Last-Event-ID."""
    progress: list[float] = []

    async def on_message(message: dict[str, Any]) -> None:
        if message["method"] == "notifications/progress":
            progress.append(message["params"]["progress"])

    params = {"name": "poll", "arguments": {"steps": 2}, "_meta": {"progressToken": "poll-1"}}
    result = await sdk.request("tools/call", params, on_message=on_message)
    assert result["content"][0]["text"] == "polled 2"
    assert progress[-2:] == [1, 2]


async def test_standalone_get_stream_carries_session_notifications(sdk: StreamableHttpClient) -> None:
    seen: list[dict[str, Any]] = []

    async def handler(message: dict[str, Any]) -> None:
        seen.append(message)

    sdk.set_notification_handler(handler)

    async def announced() -> bool:
        await sdk.request("tools/call", {"name": "announce", "arguments": {}})
        return any(m["method"] == "notifications/tools/list_changed" for m in seen)

    await eventually(announced)


async def test_server_killed_mid_call_then_reconnect(own_http_server: ServerProcess) -> None:
    client = http_client(own_http_server.url)
    await client.connect()
    try:
        call = asyncio.create_task(client.request("tools/call", {"name": "sleep", "arguments": {"seconds": 30}}))
        await asyncio.sleep(0.3)
        own_http_server.kill()
        with pytest.raises(UpstreamUnavailable):
            await asyncio.wait_for(call, 10)
        assert not client.connected
        with pytest.raises(UpstreamUnavailable):
            await client.request("tools/list")
        own_http_server.start()
        await client.connect()
        assert await echo(client, "back") == "back"
    finally:
        await client.aclose()


async def test_aclose_deletes_the_session(http_server: ServerProcess) -> None:
    client = http_client(http_server.url)
    await client.connect()
    session_id = client.session_id
    assert session_id
    await client.aclose()
    assert not client.connected
    assert await raw_post(http_server.url, session_id, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}) == 404


async def test_connection_refused_is_unavailable() -> None:
    client = http_client("http://127.0.0.1:9/mcp", connect_timeout=2.0)
    with pytest.raises(UpstreamUnavailable):
        await client.connect()
    assert not client.connected
    await client.aclose()


# ---- a scripted upstream -------------------------------------------------------------------------


async def test_headers_sent_to_the_upstream(fake: FakeUpstream) -> None:
    fake.tools["ok"] = lambda request, payload: _json_ok(fake, payload)
    client = http_client(fake.url, headers={"Authorization": "Bearer upstream-token"})
    await client.connect()
    await client.request("tools/call", {"name": "ok"})

    async def tried_get() -> bool:
        return any(verb == "GET" for verb, _, _ in fake.requests)

    await eventually(tried_get)  # the standalone stream (the fake answers 405)
    await client.aclose()
    methods = [(verb, body.get("method") if isinstance(body, dict) else None) for verb, _, body in fake.requests]
    assert methods[:2] == [("POST", "initialize"), ("POST", "notifications/initialized")]
    assert methods[-1] == ("DELETE", None)
    init_headers = fake.requests[0][1]
    assert init_headers["Accept"] == "application/json, text/event-stream"
    assert init_headers["Content-Type"] == "application/json"
    assert init_headers["Authorization"] == "Bearer upstream-token"
    assert "Mcp-Session-Id" not in init_headers
    call_headers = next(h for verb, h, body in fake.requests if body and body.get("method") == "tools/call")
    assert call_headers["Mcp-Session-Id"] == fake.session_id
    assert call_headers["MCP-Protocol-Version"] == "2025-11-25"
    assert call_headers["Authorization"] == "Bearer upstream-token"


async def _json_ok(fake: FakeUpstream, payload: dict[str, Any]) -> web.Response:
    return fake.json(payload, {"content": [{"type": "text", "text": "ok"}]})


async def test_notifications_before_the_initialize_response_are_tolerated(fake: FakeUpstream) -> None:
    async def initialize(request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        early = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "early"}}
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Mcp-Session-Id": "s-early"})
        await response.prepare(request)
        await response.write(sse_event(early))
        await response.write(sse_event({"jsonrpc": "2.0", "id": payload["id"], "result": INIT_RESULT}))
        await response.write_eof()
        return response

    fake.initialize = initialize
    seen: list[dict[str, Any]] = []

    async def handler(message: dict[str, Any]) -> None:
        seen.append(message)

    client = http_client(fake.url)
    client.set_notification_handler(handler)
    result = await client.connect()
    await client.aclose()
    assert result["serverInfo"]["name"] == "fake"
    assert client.session_id is None  # deleted on close
    assert seen
    assert seen[0]["params"]["data"] == "early"


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("invalid-json", UpstreamUnavailable),
        ("sse-garbage-then-end", UpstreamUnavailable),
        ("http-500", UpstreamUnavailable),
        ("http-401", UpstreamUnavailable),
        ("html", UpstreamUnavailable),
        ("too-large", UpstreamUnavailable),
        ("400-jsonrpc-error", UpstreamError),
        ("202-for-a-request", UpstreamUnavailable),
        ("wrong-id", UpstreamUnavailable),
        ("result-not-an-object", UpstreamUnavailable),
    ],
)
async def test_garbage_from_the_upstream_fails_fast(fake: FakeUpstream, behaviour: str, error: type[Exception]) -> None:
    async def tool(request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        rid = payload["id"]
        if behaviour == "invalid-json":
            return web.Response(body=b"{this is not json", content_type="application/json")
        if behaviour == "sse-garbage-then-end":
            return await sse_response(request, sse_event(raw="not json either"))
        if behaviour == "http-500":
            return web.Response(status=500, text="boom")
        if behaviour == "http-401":
            return web.Response(status=401, text="who are you")
        if behaviour == "html":
            return web.Response(text="<html></html>", content_type="text/html")
        if behaviour == "too-large":
            text = "x" * 5000
            return fake.json(payload, {"content": [{"type": "text", "text": text}]})
        if behaviour == "400-jsonrpc-error":
            body = {"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": "bad params"}}
            return web.json_response(body, status=400)
        if behaviour == "202-for-a-request":
            return web.Response(status=202)
        if behaviour == "wrong-id":
            return web.json_response({"jsonrpc": "2.0", "id": rid + 1000, "result": {}})
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": "a string"})

    fake.tools["t"] = tool
    client = http_client(fake.url, max_message_size=4096)
    await client.connect()
    try:
        with pytest.raises(error) as caught:
            await asyncio.wait_for(client.request("tools/call", {"name": "t"}), 5)
        if behaviour == "http-401":
            assert isinstance(caught.value, UpstreamUnavailable)
            assert caught.value.status == 401
        if behaviour == "400-jsonrpc-error":
            assert isinstance(caught.value, UpstreamError)
            assert caught.value.code == -32602
    finally:
        await client.aclose()


async def test_standalone_stream_reconnects_with_last_event_id_after_retry(fake: FakeUpstream) -> None:
    """SEP-1699 (conformance scenario `sse-retry`): wait `retry` ms after the server closes, then GET
    again with Last-Event-ID."""
    gets: list[tuple[float, str | None]] = []
    closed_at: list[float] = []
    loop = asyncio.get_running_loop()

    async def get_stream(request: web.Request) -> web.StreamResponse:
        gets.append((loop.time(), request.headers.get("Last-Event-ID")))
        changed = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
        if len(gets) == 1:
            response = await sse_response(
                request, sse_event(event_id="g-1", retry=300), sse_event(changed, event_id="g-2")
            )
            closed_at.append(loop.time())
            return response
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse_event(changed, event_id="g-3"))
        await fake.closing.wait()
        return response

    fake.get_handler = get_stream
    seen: list[dict[str, Any]] = []

    async def handler(message: dict[str, Any]) -> None:
        seen.append(message)

    client = http_client(fake.url)
    client.set_notification_handler(handler)
    await client.connect()
    try:

        async def two() -> bool:
            return len(seen) >= 2

        await eventually(two)
        assert [last_id for _, last_id in gets[:2]] == [None, "g-2"]
        assert 0.29 <= gets[1][0] - closed_at[0] < 1.0
    finally:
        await client.aclose()


async def test_post_stream_broken_without_event_id_fails(fake: FakeUpstream) -> None:
    async def tool(request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}}
        return await sse_response(request, sse_event(progress))  # no id: cannot be resumed

    fake.tools["t"] = tool
    client = http_client(fake.url)
    await client.connect()
    try:
        with pytest.raises(UpstreamUnavailable, match="ended before its response"):
            await client.request("tools/call", {"name": "t"})
    finally:
        await client.aclose()


def _self_signed() -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert_pem, key_pem


async def test_tls_with_a_ca_bundle(tmp_path: Any) -> None:
    import ssl

    cert_pem, key_pem = _self_signed()
    (tmp_path / "cert.pem").write_text(cert_pem)
    (tmp_path / "key.pem").write_text(key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    upstream = FakeUpstream()
    app = web.Application()
    app.router.add_route("*", "/mcp", upstream._handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}/mcp"
    try:
        untrusted = http_client(url, connect_timeout=3.0)
        with pytest.raises(UpstreamUnavailable):
            await untrusted.connect()
        await untrusted.aclose()
        for options in ({"ca_bundle": cert_pem}, {"verify_tls": False}):
            trusted = http_client(url, **options)
            assert (await trusted.connect())["serverInfo"]["name"] == "fake"
            await trusted.aclose()
    finally:
        await runner.cleanup()


async def test_server_request_on_the_standalone_stream_goes_to_the_only_call(fake: FakeUpstream) -> None:
    """TypeScript SDK 1.x servers send a tool's elicitation on the GET stream, not on the POST stream."""
    get_streams: list[web.StreamResponse] = []

    async def get_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        get_streams.append(response)
        await fake.closing.wait()
        return response

    async def tool(request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        ask = {"jsonrpc": "2.0", "id": "e-1", "method": "elicitation/create", "params": {"message": "name?"}}
        await get_streams[0].write(sse_event(ask))

        async def answered() -> Any:
            return next((body for _, _, body in fake.requests if body and body.get("id") == "e-1"), None)

        answer = await eventually(answered)
        name = answer["result"]["content"]["name"]
        return fake.json(payload, {"content": [{"type": "text", "text": f"hello {name}"}]})

    fake.get_handler = get_stream
    fake.tools["ask"] = tool

    async def on_message(message: dict[str, Any]) -> dict[str, Any] | None:
        return {"result": {"action": "accept", "content": {"name": "Kay"}}}

    client = http_client(fake.url)
    await client.connect()
    try:
        assert get_streams  # connect() returns once the standalone stream is open
        result = await client.request("tools/call", {"name": "ask"}, on_message=on_message)
        assert result["content"][0]["text"] == "hello Kay"
    finally:
        await client.aclose()


async def test_answered_streams_leave_the_connection_in_the_pool(fake: FakeUpstream) -> None:
    async def tool(request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        result = {"content": [{"type": "text", "text": "streamed"}]}
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse_event(event_id="p"))
        await response.write(sse_event({"jsonrpc": "2.0", "id": payload["id"], "result": result}))
        await asyncio.sleep(0.01)  # the stream ends a little after the response
        await response.write_eof()
        return response

    fake.tools["t"] = tool
    client = http_client(fake.url)
    await client.connect()
    try:
        for _ in range(5):
            assert (await client.request("tools/call", {"name": "t"}))["content"][0]["text"] == "streamed"
            await asyncio.sleep(0.02)
        calls = [peer for peer, (_, _, body) in zip(fake.peers, fake.requests, strict=True) if body and body.get("id")]
        assert len(calls) == 6  # initialize and five calls
        assert len(set(calls[1:])) == 1  # one keep-alive connection for all the calls
    finally:
        await client.aclose()
