"""MCP authorization: the gateway as an OAuth 2.1 resource server (registry/oauth.py, docs/governance.md
"MCP authorization (OAuth)").

A local authorization server (tests/fixtures/authorization_server.py: joserfc keys and tokens, Authlib
PKCE) issues the tokens. In process: the RFC 9728 metadata documents, the 401 challenges that name them,
tokens verified at the edge (audience bound to the endpoint, expiry, key, issuer; key rotation with one
refetch), scopes mapped to read/call and to one virtual server, the REST API, an unreachable
authorization server. Against a live gateway (daphne): it starts while the authorization server is down
and serves Basic, then OAuth once it is up; the mcp SDK's OAuth client runs discovery, registration,
authorization code + PKCE and the token request, then lists tools; the Inspector CLI lists tools with a
token the authorization server issued, and runs that flow itself (the test plays the browser).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pty
import signal
import subprocess
import threading
import time
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from asgiref.sync import sync_to_async

from registry import auth, oauth
from tests.factories import UserFactory, VirtualServerFactory
from tests.fixtures.authorization_server import AuthorizationServer, free_port, new_key
from tests.live_gateway import ADMIN_PASSWORD, start_live_gateway
from tests.tools import NodeToolsUnavailable, ensure_node_tools, inspector_cmd
from tests.transports.test_hot_path import INITIALIZE, asgi_post
from transports import edge

HEADERS = {"host": "localhost"}
BASE = "http://localhost"
MCP = f"{BASE}/mcp"
DEMO = f"{BASE}/servers/demo/mcp"
METADATA = f"{BASE}/.well-known/oauth-protected-resource"


def _close_connection() -> None:
    from django.db import connection

    connection.close()


@pytest.fixture(autouse=True)
async def _close_worker_connections():
    yield
    await sync_to_async(_close_connection)()


@pytest.fixture(scope="module")
def authz():
    """One authorization server for the in-process tests."""
    with AuthorizationServer() as server:
        yield server


@pytest.fixture
def oauth_on(settings, authz, db):
    """OAuth on, naming the local authorization server; virtual servers 'demo' and 'other'."""
    settings.GATEWAY_OAUTH_ISSUER = authz.issuer
    settings.GATEWAY_OAUTH_REFETCH_SECONDS = 0.0
    settings.GATEWAY_AUTH_CACHE_SECONDS = 30.0
    settings.GATEWAY_PUBLIC_URL = ""
    oauth.reset()
    edge.credentials.clear()
    VirtualServerFactory(name="demo")
    VirtualServerFactory(name="other")
    yield authz
    oauth.reset()
    edge.credentials.clear()


def _challenge(refused: edge.EdgeRefused) -> str:
    return dict(refused.headers)[b"www-authenticate"].decode()


# -- metadata documents (RFC 9728) -----------------------------------------------------------------------


@pytest.mark.django_db
def test_metadata_documents_name_the_resource_the_issuer_and_the_scopes(client, oauth_on):
    """/.well-known/oauth-protected-resource[/mcp|/servers/<name>/mcp]: resource, authorization_servers,
    scopes_supported (a server's own scope on its endpoint), bearer_methods_supported, resource_name."""
    base = "http://testserver"
    catalog = client.get("/.well-known/oauth-protected-resource/mcp")
    assert catalog.status_code == 200
    assert catalog["Access-Control-Allow-Origin"] == "*"
    assert catalog.json() == {
        "resource": f"{base}/mcp",
        "authorization_servers": [oauth_on.issuer],
        "scopes_supported": ["mcp:read", "mcp:call"],
        "bearer_methods_supported": ["header"],
        "resource_name": "MCP Gateway: the whole catalog",
    }
    demo = client.get("/.well-known/oauth-protected-resource/servers/demo/mcp").json()
    assert demo["resource"] == f"{base}/servers/demo/mcp"
    assert demo["scopes_supported"] == ["mcp:read", "mcp:call", "mcp:server:demo"]
    assert client.get("/.well-known/oauth-protected-resource/servers/demo/sse").json()["resource"] == (
        f"{base}/servers/demo/sse"
    )
    root = client.get("/.well-known/oauth-protected-resource").json()
    assert root["resource"] == base
    assert root["scopes_supported"] == ["mcp:read", "mcp:call", "mcp:write"]
    assert client.get("/.well-known/oauth-protected-resource/servers/nowhere/mcp").status_code == 404
    assert client.get("/.well-known/oauth-protected-resource/admin").status_code == 404
    assert client.options("/.well-known/oauth-protected-resource/mcp").status_code == 204


@pytest.mark.django_db
def test_metadata_documents_are_404_while_oauth_is_off(client, settings):
    settings.GATEWAY_OAUTH_ISSUER = ""
    assert client.get("/.well-known/oauth-protected-resource").status_code == 404
    assert client.get("/.well-known/oauth-protected-resource/mcp").status_code == 404


# -- challenges --------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("server", "document", "scope"),
    [
        (None, f"{METADATA}/mcp", "mcp:read mcp:call"),
        ("demo", f"{METADATA}/servers/demo/mcp", "mcp:read mcp:call mcp:server:demo"),
    ],
)
async def test_401_without_credentials_names_the_metadata_document(oauth_on, server, document, scope):
    """WWW-Authenticate: Bearer resource_metadata="<the endpoint's document>", scope="...", and Basic stays."""
    with pytest.raises(edge.EdgeRefused) as refused:
        await edge.admit(HEADERS, server, "")
    assert refused.value.status == 401
    challenge = _challenge(refused.value)
    assert f'resource_metadata="{document}"' in challenge
    assert f'scope="{scope}"' in challenge
    assert "error=" not in challenge  # no credentials: no error code (RFC 6750 section 3.1)
    assert 'Basic realm="MCP Gateway"' in challenge


@pytest.mark.django_db(transaction=True)
async def test_challenges_are_unchanged_while_oauth_is_off(settings):
    settings.GATEWAY_OAUTH_ISSUER = ""
    with pytest.raises(edge.EdgeRefused) as refused:
        await edge.admit(HEADERS, None, "")
    assert _challenge(refused.value) == auth.WWW_AUTHENTICATE


@pytest.mark.django_db(transaction=True)
async def test_the_sse_endpoint_challenge_names_its_own_document(oauth_on):
    with pytest.raises(edge.EdgeRefused) as refused:
        await edge.admit(HEADERS, "demo", "", transport="sse")
    assert f'resource_metadata="{METADATA}/servers/demo/sse"' in _challenge(refused.value)


# -- behind a TLS-terminating proxy (SECURE_PROXY_SSL_HEADER) ------------------------------------------------


@pytest.mark.django_db
def test_behind_the_proxy_the_metadata_documents_and_the_rest_challenge_say_https(client, oauth_on, settings):
    """The proxy says https in the header SECURE_PROXY_SSL_HEADER names: the documents' resource URLs and the REST
    API's challenge are https, and a token for the https audience is taken; a request the proxy marks http stays
    http."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    https = {"HTTP_HOST": "testserver", "HTTP_X_FORWARDED_PROTO": "https"}  # as nginx passes it on
    document = client.get("/.well-known/oauth-protected-resource/servers/demo/mcp", **https).json()
    assert document["resource"] == "https://testserver/servers/demo/mcp"
    assert client.get("/.well-known/oauth-protected-resource", **https).json()["resource"] == "https://testserver"
    refused = client.get("/api/servers", **https)
    assert refused.status_code == 401
    assert 'resource_metadata="https://testserver/.well-known/oauth-protected-resource"' in refused["WWW-Authenticate"]
    token = oauth_on.mint(aud="https://testserver", scope="mcp:read")
    assert client.get("/api/servers", HTTP_AUTHORIZATION=f"Bearer {token}", **https).status_code == 200
    plain = client.get("/.well-known/oauth-protected-resource/mcp", HTTP_X_FORWARDED_PROTO="http").json()
    assert plain["resource"] == "http://testserver/mcp"


@pytest.mark.django_db
def test_without_the_setting_a_client_cannot_claim_https(client, oauth_on, settings):
    """SECURE_PROXY_SSL_HEADER unset (the embedded default): X-Forwarded-Proto does not change Django's scheme."""
    settings.SECURE_PROXY_SSL_HEADER = None
    document = client.get("/.well-known/oauth-protected-resource/mcp", HTTP_X_FORWARDED_PROTO="https").json()
    assert document["resource"] == "http://testserver/mcp"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("configured", "headers", "scheme"),
    [
        (("HTTP_X_FORWARDED_PROTO", "https"), {"x-forwarded-proto": "https"}, "https"),
        (("HTTP_X_FORWARDED_PROTO", "https"), {"x-forwarded-proto": "https, http"}, "https"),
        (("HTTP_X_FORWARDED_PROTO", "https"), {"x-forwarded-proto": "http"}, "http"),
        (("HTTP_X_FORWARDED_PROTO", "https"), {}, "http"),
        (("HTTP_X_FORWARDED_SSL", "on"), {"x-forwarded-ssl": "on", "x-forwarded-proto": "http"}, "https"),
        (("HTTP_X_FORWARDED_SSL", "on"), {"x-forwarded-proto": "https"}, "http"),
        (None, {"x-forwarded-proto": "https"}, "https"),  # as before the setting existed
    ],
)
async def test_the_mcp_challenge_reads_the_scheme_as_django_does(oauth_on, settings, configured, headers, scheme):
    """The 401 of an MCP endpoint names the document at the URL the document states (Django's reading of
    SECURE_PROXY_SSL_HEADER); without the setting it reads X-Forwarded-Proto, as it always has."""
    settings.SECURE_PROXY_SSL_HEADER = configured
    with pytest.raises(edge.EdgeRefused) as refused:
        await edge.admit({**HEADERS, **headers}, "demo", "")
    document = f"{scheme}://localhost/.well-known/oauth-protected-resource/servers/demo/mcp"
    assert f'resource_metadata="{document}"' in _challenge(refused.value)


# -- verification ------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_valid_token_for_the_endpoint_is_admitted(oauth_on):
    """aud = the endpoint's resource URL, mapped scopes; no Django user named alike: an 'oauth:' principal."""
    caller = await edge.admit(HEADERS, None, f"Bearer {oauth_on.mint(aud=MCP)}")
    assert caller.username == "oauth:user-0001"
    assert caller.scopes == frozenset({"read", "call"})
    caller = await edge.admit(HEADERS, "demo", f"Bearer {oauth_on.mint(aud=DEMO, scope='mcp:read')}")
    assert caller.scopes == frozenset({"read"})
    assert caller.server == "demo"


@pytest.mark.django_db(transaction=True)
async def test_a_token_naming_a_django_user_acts_as_that_user(oauth_on):
    """preferred_username matches a user: that user, with the token's scopes narrowed to the user's."""
    await sync_to_async(UserFactory)(username="alice", is_staff=False)
    token = oauth_on.mint(aud=BASE, scope="mcp:read mcp:call mcp:write", preferred_username="alice")
    caller = await edge.admit(HEADERS, None, f"Bearer {token}")
    assert caller.username == "alice"
    assert caller.scopes == frozenset({"read", "call"})  # not staff: no write


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong audience", "another resource"),
        ("another server's audience", "another resource"),
        ("expired", "expired"),
        ("unknown key", "does not publish"),
        ("wrong issuer", "another authorization server"),
        ("not a JWT", "not a JWT"),
    ],
)
async def test_bad_tokens_are_refused_with_invalid_token(oauth_on, case, reason):
    """Wrong audience, expired (past the leeway), a key the issuer does not publish, another issuer, an
    opaque token: 401 with error="invalid_token" and a sentence naming the reason."""
    token = {
        "wrong audience": lambda: oauth_on.mint(aud="https://elsewhere.example/mcp"),
        "another server's audience": lambda: oauth_on.mint(aud=f"{BASE}/servers/other/mcp"),
        "expired": lambda: oauth_on.mint(aud=MCP, expires_in=-120),
        "unknown key": lambda: oauth_on.mint(aud=MCP, key=new_key()),
        "wrong issuer": lambda: oauth_on.mint(aud=MCP, iss="http://127.0.0.1:9/evil"),
        "not a JWT": lambda: "opaque-token-0123456789",
    }[case]()
    with pytest.raises(edge.EdgeRefused) as refused:
        await edge.admit(HEADERS, None, f"Bearer {token}")
    assert refused.value.status == 401
    assert reason in refused.value.message
    challenge = _challenge(refused.value)
    assert 'error="invalid_token"' in challenge
    assert f'resource_metadata="{METADATA}/mcp"' in challenge


@pytest.mark.django_db(transaction=True)
async def test_a_cached_token_is_still_bound_to_its_audience(oauth_on):
    """Admitted at server demo (and cached), the same token is refused at server other."""
    header = f"Bearer {oauth_on.mint(aud=DEMO)}"
    assert (await edge.admit(HEADERS, "demo", header)).username == "oauth:user-0001"
    with pytest.raises(edge.EdgeRefused) as refused:
        await edge.admit(HEADERS, "other", header)
    assert refused.value.status == 401
    assert 'error="invalid_token"' in _challenge(refused.value)


@pytest.mark.django_db(transaction=True)
async def test_key_rotation_costs_one_refetch(oauth_on):
    """After the issuer rotates its key, a token signed with the new key works after exactly one JWKS fetch;
    one signed with the retired key is refused."""
    old = oauth_on.mint(aud=MCP)
    await edge.admit(HEADERS, None, f"Bearer {old}")
    oauth_on.rotate()
    fetches = oauth_on.jwks_fetches()
    new = oauth_on.mint(aud=MCP)
    await edge.admit(HEADERS, None, f"Bearer {new}")
    await edge.admit(HEADERS, None, f"Bearer {oauth_on.mint(aud=MCP, scope='mcp:read')}")
    assert oauth_on.jwks_fetches() == fetches + 1
    edge.credentials.clear()
    with pytest.raises(edge.EdgeRefused) as refused:
        await edge.admit(HEADERS, None, f"Bearer {old}")
    assert "does not publish" in refused.value.message


@pytest.mark.django_db(transaction=True)
async def test_the_gateways_own_tokens_and_basic_keep_working(oauth_on):
    await sync_to_async(UserFactory)(username="local", is_staff=True)
    own = await sync_to_async(auth.token_issue)(username="local")
    assert (await edge.admit(HEADERS, None, f"Bearer {own}")).username == "local"
    basic = base64.b64encode(b"local:correct-horse-battery").decode()
    assert (await edge.admit(HEADERS, None, f"Basic {basic}")).username == "local"


# -- scopes ------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_read_only_token_cannot_call_tools(oauth_on):
    """A 2026-07-28 tools/call (Mcp-Method header) with a token lacking mcp:call: 403 insufficient_scope
    with the scopes to ask for; lacking mcp:read, every request is refused so."""
    header = f"Bearer {oauth_on.mint(aud=MCP, scope='mcp:read')}"
    assert (await edge.admit(HEADERS, None, header)).scopes == frozenset({"read"})
    with pytest.raises(edge.EdgeRefused) as refused:
        await edge.admit({**HEADERS, "mcp-method": "tools/call"}, None, header)
    assert refused.value.status == 403
    challenge = _challenge(refused.value)
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="mcp:read mcp:call"' in challenge
    with pytest.raises(edge.EdgeRefused) as refused:
        await edge.admit(HEADERS, None, f"Bearer {oauth_on.mint(aud=MCP, scope='mcp:call')}")
    assert refused.value.status == 403
    assert "'mcp:read'" in refused.value.message


@pytest.mark.django_db(transaction=True)
async def test_a_read_only_token_in_a_session_gets_the_json_rpc_refusal(oauth_on):
    """Over Streamable HTTP (legacy session): initialize and tools/list work, tools/call is forbidden."""
    token = oauth_on.mint(aud="http://127.0.0.1/mcp", scope="mcp:read")
    status, headers, _ = await asgi_post(INITIALIZE, token=token)
    assert status == 200
    session = headers["mcp-session-id"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    status, _, listed = await asgi_post(listing, token=token, session=session)
    assert status == 200
    assert "tools" in listed["result"]
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "x", "arguments": {}}}
    _, _, answer = await asgi_post(call, token=token, session=session)
    assert "error" in answer


@pytest.mark.django_db(transaction=True)
async def test_over_streamable_http_a_bad_token_gets_the_challenge(oauth_on):
    token = oauth_on.mint(aud="http://127.0.0.1/mcp", expires_in=-300)
    status, headers, body = await asgi_post(INITIALIZE, token=token)
    assert status == 401
    document = "http://127.0.0.1/.well-known/oauth-protected-resource/mcp"
    assert f'resource_metadata="{document}"' in headers["www-authenticate"]
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert "expired" in body["error"]["message"]


@pytest.mark.django_db(transaction=True)
async def test_a_server_scope_limits_the_token_to_that_server(oauth_on):
    """mcp:server:demo with the gateway's base URL as audience: demo's endpoints only."""
    header = f"Bearer {oauth_on.mint(aud=BASE, scope='mcp:read mcp:call mcp:server:demo')}"
    assert (await edge.admit(HEADERS, "demo", header)).server == "demo"
    for server in (None, "other"):
        with pytest.raises(edge.EdgeRefused) as refused:
            await edge.admit(HEADERS, server, header)
        assert refused.value.status == 403
        assert "bound to virtual server 'demo'" in refused.value.message
    two = oauth_on.mint(aud=BASE, scope="mcp:read mcp:server:demo mcp:server:other")
    with pytest.raises(edge.EdgeRefused) as refused:  # a token for two servers is refused
        await edge.admit(HEADERS, "demo", f"Bearer {two}")
    assert refused.value.status == 401


# -- the REST API --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_rest_api_takes_oauth_tokens_for_its_audience(client, oauth_on):
    """aud = the gateway's base URL: reads work; a write without a staff user behind the token is 403
    insufficient_scope; no credentials: 401 naming the gateway's document."""
    token = oauth_on.mint(aud="http://testserver", scope="mcp:read mcp:call mcp:write")
    assert client.get("/api/servers", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    refused = client.post(
        "/api/servers", {"name": "x"}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert refused.status_code == 403
    assert 'error="insufficient_scope"' in refused["WWW-Authenticate"]
    anonymous = client.get("/api/servers")
    assert anonymous.status_code == 401
    assert 'resource_metadata="http://testserver/.well-known/oauth-protected-resource"' in anonymous["WWW-Authenticate"]
    wrong = client.get("/api/servers", HTTP_AUTHORIZATION=f"Bearer {oauth_on.mint(aud='http://testserver/mcp')}")
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong["WWW-Authenticate"]


# -- an unreachable authorization server -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_an_unreachable_issuer_is_503_and_basic_still_works(oauth_on, settings):
    """Nothing listens at the issuer: an OAuth token gets 503 with Retry-After and a sentence naming
    GATEWAY_OAUTH_ISSUER (the token may be fine); HTTP Basic is served as usual."""
    down = AuthorizationServer()  # never started
    settings.GATEWAY_OAUTH_ISSUER = down.issuer
    settings.GATEWAY_OAUTH_TIMEOUT = 1.0
    with pytest.raises(edge.EdgeRefused) as refused:
        await edge.admit(HEADERS, None, f"Bearer {down.mint(aud=MCP)}")
    assert refused.value.status == 503
    assert "GATEWAY_OAUTH_ISSUER" in refused.value.message
    assert dict(refused.value.headers)[b"retry-after"]
    await sync_to_async(UserFactory)(username="local")
    basic = base64.b64encode(b"local:correct-horse-battery").decode()
    assert (await edge.admit(HEADERS, None, f"Basic {basic}")).username == "local"


# -- a live gateway: startup while the issuer is down, the mcp SDK's OAuth client, the Inspector CLI ------------


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A gateway started while its authorization server is down (it is started by the tests)."""
    server = AuthorizationServer()
    with start_live_gateway(
        tmp_path_factory.mktemp("oauth-gateway"),
        GATEWAY_OAUTH_ISSUER=server.issuer,
        GATEWAY_OAUTH_REFETCH_SECONDS="0.5",
        GATEWAY_OAUTH_TIMEOUT="2",
    ) as gateway:
        yield gateway, server
    server.stop()


def _initialize(url: str, authorization: str) -> httpx2.Response:
    return httpx2.post(
        url,
        json=INITIALIZE,
        headers={"Authorization": authorization, "Accept": "application/json, text/event-stream"},
        timeout=30,
    )


def test_the_gateway_starts_while_the_issuer_is_down_then_takes_its_tokens(live):
    """Started with the issuer unreachable, the gateway serves Basic; an OAuth token gets 503; once the
    authorization server is up, the same token works."""
    gateway, server = live
    server.stop()
    basic = "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    assert _initialize(gateway.mcp_url(), basic).status_code == 200
    token = server.mint(aud=gateway.mcp_url())
    down = _initialize(gateway.mcp_url(), f"Bearer {token}")
    assert down.status_code == 503, down.text
    assert "GATEWAY_OAUTH_ISSUER" in down.text
    server.start()
    time.sleep(0.6)  # GATEWAY_OAUTH_REFETCH_SECONDS after the failure
    assert _initialize(gateway.mcp_url(), f"Bearer {token}").status_code == 200


def test_the_mcp_sdk_oauth_client_completes_the_flow(live):
    """OAuthClientProvider: 401 -> protected-resource metadata -> issuer metadata -> dynamic registration ->
    authorization code with PKCE (the redirect handler follows the auto-approving authorize URL and
    captures the code) -> token for the gateway's resource -> tools/list through the gateway."""
    from mcp import Client
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

    gateway, server = live
    server.start()
    hits = len(server.hits)

    class Memory:
        def __init__(self) -> None:
            self.tokens: OAuthToken | None = None
            self.client: OAuthClientInformationFull | None = None

        async def get_tokens(self):
            return self.tokens

        async def set_tokens(self, tokens):
            self.tokens = tokens

        async def get_client_info(self):
            return self.client

        async def set_client_info(self, client_info):
            self.client = client_info

    captured: dict[str, str | None] = {}

    async def redirect_handler(url: str) -> None:
        async with httpx2.AsyncClient(timeout=10) as http:
            answer = await http.get(url)
        assert answer.status_code == 302, answer.text
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        captured.update({key: values[0] for key, values in query.items()})

    async def callback_handler() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=captured["code"], state=captured.get("state"), iss=captured.get("iss"))

    storage = Memory()
    provider = OAuthClientProvider(
        server_url=gateway.mcp_url(),
        client_metadata=OAuthClientMetadata(
            client_name="oauth-test",
            redirect_uris=["http://127.0.0.1:1/callback"],
            grant_types=["authorization_code"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )

    async def main() -> list[str]:
        async with (
            httpx2.AsyncClient(auth=provider, timeout=30) as http,
            Client(streamable_http_client(gateway.mcp_url(), http_client=http)) as client,
        ):
            return [tool.name for tool in (await client.list_tools()).tools]

    tools = asyncio.run(main())
    assert isinstance(tools, list)
    flow = server.hits[hits:]
    assert {"POST /as/register", "GET /as/authorize", "POST /as/token"} <= set(flow)
    assert storage.tokens is not None
    claims = json.loads(base64.urlsafe_b64decode(storage.tokens.access_token.split(".")[1] + "=="))
    assert claims["aud"] == gateway.mcp_url()  # RFC 8707: the resource the metadata named
    assert set(claims["scope"].split()) == {"mcp:read", "mcp:call"}  # the challenge's scope


@pytest.fixture
def inspector_live(live):
    """``live`` with its authorization server up, for the inspector CLI: skipped when the Node tools cannot be
    installed."""
    gateway, server = live
    server.start()
    try:
        ensure_node_tools()
    except NodeToolsUnavailable as exc:
        pytest.skip(str(exc))
    return gateway, server


def test_the_inspector_cli_lists_tools_with_an_issued_token(inspector_live):
    """`mcp-inspector --cli URL --header 'Authorization: Bearer <token from the AS>' --method tools/list`."""
    gateway, server = inspector_live
    client = server.register(grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_post")
    issued = httpx2.post(
        f"{server.issuer}/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "scope": "mcp:read mcp:call",
            "resource": gateway.mcp_url(),
        },
        timeout=10,
    ).json()
    argv = [
        *inspector_cmd(),
        "--cli",
        gateway.mcp_url(),
        "--transport",
        "http",
        "--header",
        f"Authorization: Bearer {issued['access_token']}",
        "--method",
        "tools/list",
        "--format",
        "json",
        "-q",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tools" in json.loads(result.stdout)["result"]


def test_the_inspector_cli_runs_the_oauth_flow_itself(inspector_live, tmp_path, monkeypatch):
    """`mcp-inspector --cli URL --method tools/list` with no credentials: the gateway's 401 starts the CLI's
    own OAuth client (protected-resource and issuer metadata, dynamic registration, authorization code with
    PKCE, its callback listener on a loopback port). The test is the user at the browser: it opens the URL the
    CLI prints, the authorization server approves at once, and the test follows the redirect to the callback.
    The CLI then lists tools with a token whose audience is the gateway's MCP URL."""
    gateway, server = inspector_live
    issued: list[str] = []
    mint = server.mint

    def recording_mint(**kwargs: Any) -> str:
        token = mint(**kwargs)
        issued.append(token)
        return token

    monkeypatch.setattr(server, "mint", recording_mint)
    hits = len(server.hits)
    home = tmp_path / "home"
    home.mkdir()
    argv = inspector_cmd()
    # Placed after inspector_cmd()'s own HOME (env applies assignments in order): a fresh store each run, so
    # no token from an earlier run skips the flow, and nothing reaches the machine's ~/.mcp-inspector or its
    # OS keychain. Auto-open off, so no browser the machine may have races the test to the callback;
    # MCP_AUTO_OPEN_ENABLED=true would lift the CLI's terminal requirement but also force a browser open.
    argv[-1:-1] = [
        f"HOME={home}",
        f"MCP_STORAGE_DIR={home / 'storage'}",
        "MCP_INSPECTOR_SECRET_STORE=memory",
        "MCP_AUTO_OPEN_ENABLED=false",
    ]
    argv += [
        "--cli",
        gateway.mcp_url(),
        "--transport",
        "http",
        "--callback-url",
        f"http://127.0.0.1:{free_port()}/oauth/callback",
        "--method",
        "tools/list",
        "--format",
        "json",
        "-q",
    ]
    # Without a terminal on stdin or stderr the CLI refuses interactive OAuth (exit code auth_required).
    terminal, terminal_side = pty.openpty()
    stdout_path = tmp_path / "stdout.json"
    stderr_lines: list[str] = []
    navigate = threading.Event()
    prompt = "Please navigate to: "

    def read_stderr(stream: IO[str]) -> None:
        for line in stream:
            stderr_lines.append(line)
            if line.startswith(prompt):
                navigate.set()

    with open(stdout_path, "w") as stdout:
        cli = subprocess.Popen(
            argv, stdin=terminal_side, stdout=stdout, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
    os.close(terminal_side)
    assert cli.stderr is not None
    reader = threading.Thread(target=read_stderr, args=(cli.stderr,), daemon=True)
    reader.start()

    def stderr_text() -> str:
        return "".join(stderr_lines)[-3000:]

    try:
        deadline = time.monotonic() + 60
        while not navigate.wait(0.2):
            running = cli.poll() is None and time.monotonic() < deadline
            assert running, f"the CLI printed no authorization URL (exit {cli.returncode}):\n{stderr_text()}"
        url = next(line for line in stderr_lines if line.startswith(prompt))[len(prompt) :].strip()
        assert url.startswith(f"{server.issuer}/authorize?"), url
        approval = httpx2.get(url, timeout=10)
        assert approval.status_code == 302, approval.text
        callback = httpx2.get(approval.headers["location"], timeout=30)
        assert callback.status_code == 200, f"{callback.text[:500]}\n{stderr_text()}"
        returncode = cli.wait(60)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait(10)
        os.close(terminal)
        reader.join(10)
        cli.stderr.close()
    assert returncode == 0, stderr_text()
    assert "tools" in json.loads(stdout_path.read_text())["result"]
    flow = set(server.hits[hits:])
    # Given only the gateway's URL, the CLI found the issuer through the gateway's challenge and metadata.
    assert "GET /.well-known/oauth-authorization-server/as" in flow
    assert {"POST /as/register", "GET /as/authorize", "POST /as/token"} <= flow
    assert len(issued) == 1
    claims = json.loads(base64.urlsafe_b64decode(issued[0].split(".")[1] + "=="))
    assert claims["aud"] == gateway.mcp_url()  # RFC 8707: the resource the metadata named
    assert set(claims["scope"].split()) == {"mcp:read", "mcp:call"}  # the challenge's scope


# -- the hot path ------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_steady_state_oauth_requests_make_no_database_query_and_no_fetch(oauth_on, django_db_blocker):
    """With OAuth on, after the first request (discovery, keys, the user lookup) tools/list runs with the
    database blocked and no further request to the authorization server (the edge's credential cache)."""
    token = oauth_on.mint(aud="http://127.0.0.1/mcp")
    status, headers, _ = await asgi_post(INITIALIZE, token=token)
    assert status == 200
    session = headers["mcp-session-id"]
    hits = len(oauth_on.hits)
    with django_db_blocker.block():
        for round_ in range(3):
            listing = {"jsonrpc": "2.0", "id": 10 + round_, "method": "tools/list"}
            status, _, listed = await asgi_post(listing, token=token, session=session)
            assert status == 200
            assert "tools" in listed["result"]
    assert len(oauth_on.hits) == hits
