"""Per-user upstream credentials (docs/governance.md, "Per-user upstream credentials").

- the vault encrypts at rest; its values never reach API answers or the audit log;
- two users through one per-user gateway reach the upstream (the fixture server with ``--require-bearer``,
  which reports every Authorization it received) each with their own token, and the gateway token the client
  sent never reaches it;
- a user without credentials gets a JSON-RPC error saying where to connect them;
- OAuth client credentials (the fixture authorization server issues short-lived tokens): fetched once, again
  after expiry, and again after the upstream answered 401;
- OAuth per user: the connect page's authorization-code flow with PKCE stores tokens; an expired access token
  is refreshed with the refresh token; a refresh that fails tells the user to connect again;
- steady state makes no database query (the database blocked);
- permissions: sign-in required, CSRF on the forms, each user manages only their own credentials.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import Client

from registry import auth, services
from registry.choices import AuthType
from registry.models import AuditEntry, Gateway, Tool, UpstreamCredential
from tests.factories import GatewayFactory, ToolFactory, UserFactory
from tests.fixtures.authorization_server import AuthorizationServer
from tests.fixtures.servers import RunningUpstream, start_upstream
from tests.transports.test_hot_path import INITIALIZE, asgi_post
from transports import edge
from transports.runtime import get_core, reset_core

SECRET = "alice-very-secret-upstream-token"


@pytest.fixture(scope="module")
def guarded_upstream():
    """The fixture MCP server requiring a bearer token and recording every Authorization it gets."""
    upstream = start_upstream(require_bearer=True)
    yield upstream
    upstream.stop()


@pytest.fixture
def authorization_server():
    with AuthorizationServer() as server:
        yield server


def seen(upstream: RunningUpstream) -> list[str | None]:
    with urllib.request.urlopen(f"{upstream.base_url}/_auth/seen", timeout=5) as response:
        return json.loads(response.read())


def reject(upstream: RunningUpstream, token: str) -> None:
    request = urllib.request.Request(f"{upstream.base_url}/_auth/reject", data=token.encode(), method="POST")
    urllib.request.urlopen(request, timeout=5).read()


def _close_connection() -> None:
    connection.close()


@pytest.fixture(autouse=True)
async def _fresh_core():
    reset_core()
    edge.credentials.clear()
    yield
    core = get_core()
    await core.upstreams.aclose()
    reset_core()
    await sync_to_async(_close_connection)()


async def call_echo(token: str, message: str, *, request_id: int = 2) -> dict[str, Any]:
    """initialize, then tools/call echo through the gateway (the client's own bearer token ``token``)."""
    status, headers, result = await asgi_post(INITIALIZE, token=token)
    assert status == 200, result
    _, _, answer = await asgi_post(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": "fx_echo", "arguments": {"message": message}},
        },
        token=token,
        session=headers["mcp-session-id"],
    )
    return answer


def per_user_gateway(url: str, *, auth_type: str = AuthType.BEARER, **fields: Any) -> Gateway:
    gateway = GatewayFactory(name="fx", url=url, auth_type=auth_type, per_user_credentials=True, **fields)
    ToolFactory(name="fx_echo", original_name="echo", gateway=gateway, input_schema={"type": "object"})
    return gateway


# -- the vault ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_vault_encrypts_at_rest_and_never_shows_the_value():
    """The database column holds a Fernet token, not the secret; the audit entry says "(changed)"; the API's
    gateway answer carries no credential value."""
    alice = UserFactory(username="alice")
    gateway = per_user_gateway("http://127.0.0.1:9/mcp")
    services.user_credentials_set(user=alice, gateway=gateway, credentials={"token": SECRET})
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials_encrypted FROM registry_upstreamcredential")
        (raw,) = cursor.fetchone()
    assert SECRET not in raw
    assert raw.startswith("gAAAA")
    assert UpstreamCredential.objects.get().get_credentials() == {"token": SECRET}
    entry = AuditEntry.objects.get(kind="upstreamcredential")
    assert entry.detail["credentials"] == "(changed)"
    assert SECRET not in json.dumps(entry.detail)
    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    answer = client.get(f"/api/gateways/{gateway.pk}")
    assert answer.status_code == 200
    assert answer.json()["per_user_credentials"] is True
    assert SECRET not in answer.content.decode()


@pytest.mark.django_db
def test_the_api_sets_and_deletes_only_the_callers_own_credentials():
    """PUT/DELETE /api/gateways/{id}/my-credentials act on the caller's own entry; the answer has no value."""
    alice, bob = UserFactory(username="alice", is_staff=True), UserFactory(username="bob", is_staff=True)
    gateway = per_user_gateway("http://127.0.0.1:9/mcp")
    services.user_credentials_set(user=bob, gateway=gateway, credentials={"token": "bob-token"})
    token = auth.token_issue(username="alice")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    url = f"/api/gateways/{gateway.pk}/my-credentials"
    answer = Client().put(url, data=json.dumps({"token": SECRET}), content_type="application/json", **headers)
    assert answer.status_code == 200, answer.content
    assert answer.json()["connected"] is True
    assert SECRET not in answer.content.decode()
    assert UpstreamCredential.objects.get(user=alice).get_credentials() == {"token": SECRET}
    assert Client().delete(url, **headers).status_code == 200
    assert not UpstreamCredential.objects.filter(user=alice).exists()
    assert UpstreamCredential.objects.get(user=bob).get_credentials() == {"token": "bob-token"}
    bad = Client().put(url, data=json.dumps({"token": ""}), content_type="application/json", **headers)
    assert bad.status_code == 422
    assert "token" in bad.content.decode()


@pytest.mark.django_db
def test_the_accounts_page_needs_sign_in_csrf_and_touches_only_my_credentials():
    """Anonymous: sent to sign in; a POST without the CSRF token: 403; a non-staff user stores and deletes their
    own credentials from the page, and another user's stay."""
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    gateway = per_user_gateway("http://127.0.0.1:9/mcp")
    services.user_credentials_set(user=bob, gateway=gateway, credentials={"token": "bob-token"})
    anonymous = Client().get("/accounts/upstreams/")
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/accounts/login/")
    guarded = Client(enforce_csrf_checks=True)
    guarded.force_login(alice)
    assert guarded.post("/accounts/upstreams/fx/connect/", {"token": SECRET}).status_code == 403
    client = Client()
    client.force_login(alice)
    page = client.get("/accounts/upstreams/")
    assert page.status_code == 200
    assert b'<label for="token-' in page.content
    assert b"Not connected" in page.content
    done = client.post("/accounts/upstreams/fx/connect/", {"token": SECRET}, follow=True)
    assert b"Your credentials for fx are stored." in done.content
    assert SECRET.encode() not in done.content
    assert UpstreamCredential.objects.get(user=alice).get_credentials() == {"token": SECRET}
    client.post("/accounts/upstreams/fx/disconnect/")
    assert not UpstreamCredential.objects.filter(user=alice).exists()
    assert UpstreamCredential.objects.filter(user=bob).exists()


# -- calls --------------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_two_users_reach_the_upstream_with_their_own_tokens_never_the_clients(guarded_upstream):
    """alice and bob call the same tool of a per-user gateway: the upstream sees alice's and bob's own upstream
    tokens, and never the gateway tokens the clients sent."""

    def setup() -> tuple[str, str]:
        alice = UserFactory(username="alice", is_staff=True)
        bob = UserFactory(username="bob", is_staff=True)
        gateway = per_user_gateway(guarded_upstream.url)
        services.user_credentials_set(user=alice, gateway=gateway, credentials={"token": "upstream-alice"})
        services.user_credentials_set(user=bob, gateway=gateway, credentials={"token": "upstream-bob"})
        return auth.token_issue(username="alice"), auth.token_issue(username="bob")

    alice_token, bob_token = await sync_to_async(setup)()
    before = len(await asyncio.to_thread(seen, guarded_upstream))
    answer = await call_echo(alice_token, "from alice")
    assert answer["result"]["content"][0]["text"] == "from alice", answer
    answer = await call_echo(bob_token, "from bob")
    assert answer["result"]["content"][0]["text"] == "from bob", answer
    received = (await asyncio.to_thread(seen, guarded_upstream))[before:]
    assert "Bearer upstream-alice" in received
    assert "Bearer upstream-bob" in received
    assert set(received) <= {"Bearer upstream-alice", "Bearer upstream-bob"}
    assert not any(alice_token in (value or "") or bob_token in (value or "") for value in received)


@pytest.mark.django_db(transaction=True)
async def test_a_user_without_credentials_is_told_where_to_connect(guarded_upstream):
    def setup() -> str:
        UserFactory(username="carol", is_staff=True)
        per_user_gateway(guarded_upstream.url)
        return auth.token_issue(username="carol")

    answer = await call_echo(await sync_to_async(setup)(), "hello")
    message = answer["error"]["message"]
    assert "connect your account for gateway 'fx' at" in message
    assert "/accounts/upstreams/" in message
    assert "my-credentials" in message


@pytest.mark.django_db(transaction=True)
async def test_a_change_of_credentials_applies_at_once_and_steady_state_makes_no_query(
    guarded_upstream, django_db_blocker
):
    """After the first call, calls of a per-user gateway run with the database blocked; a new token stored
    through the services is used by the next call (the process's cache is dropped on save)."""

    def setup() -> str:
        alice = UserFactory(username="alice", is_staff=True)
        gateway = per_user_gateway(guarded_upstream.url)
        services.user_credentials_set(user=alice, gateway=gateway, credentials={"token": "first-token"})
        return auth.token_issue(username="alice")

    token = await sync_to_async(setup)()
    _status, headers, _ = await asgi_post(INITIALIZE, token=token)
    session = headers["mcp-session-id"]
    call = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "fx_echo", "arguments": {"message": "x"}}}
    assert (await asgi_post({**call, "id": 2}, token=token, session=session))[2]["result"]["content"][0]["text"] == "x"
    with django_db_blocker.block():
        for n in range(3):
            _, _, answer = await asgi_post({**call, "id": 10 + n}, token=token, session=session)
            assert answer["result"]["content"][0]["text"] == "x", answer

    def change() -> None:
        services.user_credentials_set(
            user=UserFactory(username="alice"), gateway=Gateway.objects.get(name="fx"), credentials={"token": "second"}
        )

    await sync_to_async(change)()
    _, _, answer = await asgi_post({**call, "id": 20}, token=token, session=session)
    assert answer["result"]["content"][0]["text"] == "x", answer
    assert (await asyncio.to_thread(seen, guarded_upstream))[-1] == "Bearer second"


@pytest.mark.django_db(transaction=True)
async def test_refused_user_credentials_say_reconnect_and_do_not_mark_the_upstream_down(guarded_upstream):
    def setup() -> str:
        alice = UserFactory(username="alice", is_staff=True)
        gateway = per_user_gateway(guarded_upstream.url)
        services.user_credentials_set(user=alice, gateway=gateway, credentials={"token": "revoked-token"})
        return auth.token_issue(username="alice")

    token = await sync_to_async(setup)()
    await asyncio.to_thread(reject, guarded_upstream, "revoked-token")
    answer = await call_echo(token, "x")
    assert "refused your credentials" in answer["error"]["message"]
    assert "connect your account for gateway 'fx' again" in answer["error"]["message"]


# -- OAuth --------------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_client_credentials_are_fetched_once_then_after_expiry_and_after_a_401(
    guarded_upstream, authorization_server
):
    """oauth2-client: one token for many calls; a new one after it expired; a new one (and the call retried)
    after the upstream refused the current one."""
    authorization_server.token_lifetime = 3
    client = authorization_server.register(
        token_endpoint_auth_method="client_secret_basic", grant_types=["client_credentials"]
    )

    def setup() -> str:
        UserFactory(username="alice", is_staff=True)
        gateway = GatewayFactory(
            name="fx",
            url=guarded_upstream.url,
            oauth_token_url=f"{authorization_server.issuer}/token",
            oauth_client_id=client["client_id"],
            oauth_scopes="mcp:call",
        )
        gateway.set_credentials(AuthType.OAUTH_CLIENT, {"client_secret": client["client_secret"]})
        gateway.save()
        ToolFactory(name="fx_echo", original_name="echo", gateway=gateway, input_schema={"type": "object"})
        return auth.token_issue(username="alice")

    token = await sync_to_async(setup)()
    for n in range(2):
        answer = await call_echo(token, f"call {n}")
        assert answer["result"]["content"][0]["text"] == f"call {n}", answer
    assert authorization_server.grants == ["client_credentials"]
    first = (await asyncio.to_thread(seen, guarded_upstream))[-1]
    await asyncio.sleep(3.1)
    answer = await call_echo(token, "after expiry")
    assert answer["result"]["content"][0]["text"] == "after expiry", answer
    assert authorization_server.grants == ["client_credentials"] * 2
    second = (await asyncio.to_thread(seen, guarded_upstream))[-1]
    assert second != first
    assert second
    assert second.startswith("Bearer ")
    await asyncio.to_thread(reject, guarded_upstream, second.removeprefix("Bearer "))
    answer = await call_echo(token, "after 401")
    assert answer["result"]["content"][0]["text"] == "after 401", answer
    assert authorization_server.grants == ["client_credentials"] * 3


@pytest.mark.django_db(transaction=True)
def test_connect_my_account_runs_the_authorization_code_flow(authorization_server):
    """The connect button redirects to the authorization server with PKCE and state; its answer comes back to
    the callback, which exchanges the code and stores the tokens (encrypted) in the vault."""
    client_info = authorization_server.register(redirect_uris=["http://testserver/accounts/upstreams/callback/"])
    alice = UserFactory(username="alice")
    per_user_gateway(
        "http://127.0.0.1:9/mcp",
        auth_type=AuthType.OAUTH_USER,
        oauth_authorization_url=f"{authorization_server.issuer}/authorize",
        oauth_token_url=f"{authorization_server.issuer}/token",
        oauth_client_id=client_info["client_id"],
        oauth_scopes="mcp:call",
    )
    browser = Client()
    browser.force_login(alice)
    assert b"Connect my account" in browser.get("/accounts/upstreams/").content
    started = browser.post("/accounts/upstreams/fx/connect/")
    assert started.status_code == 302
    location = started["Location"]
    assert location.startswith(f"{authorization_server.issuer}/authorize?")
    assert "code_challenge=" in location
    assert "state=" in location

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as refused:  # the redirect, not followed
        opener.open(location, timeout=5)
    assert refused.value.code == 302
    back = refused.value.headers["Location"]
    callback = urlsplit(back)
    assert callback.path == "/accounts/upstreams/callback/"
    done = browser.get(f"{callback.path}?{callback.query}", follow=True)
    assert b"Your account for fx is connected." in done.content, done.content
    stored = UpstreamCredential.objects.get(user=alice)
    values = stored.get_credentials()
    assert values["access_token"]
    assert values["refresh_token"]
    assert stored.expires_at is not None
    assert values["access_token"] not in stored.credentials_encrypted
    assert authorization_server.grants == ["authorization_code"]
    # The same callback again (a replayed state) is refused with a sentence.
    again = browser.get(f"{callback.path}?{callback.query}", follow=True)
    assert b"start again with Connect" in again.content


@pytest.mark.django_db(transaction=True)
async def test_an_expired_user_token_is_refreshed_and_a_failed_refresh_says_reconnect(
    guarded_upstream, authorization_server
):
    """oauth2-user: an access token past its time is refreshed with the refresh token (the new tokens are
    stored), and used upstream; a refresh token the server no longer knows gives the reconnect sentence."""
    client_info = authorization_server.register(redirect_uris=["http://testserver/accounts/upstreams/callback/"])
    authorization_server.refresh_tokens["rt-alice"] = {
        "client_id": client_info["client_id"],
        "scope": "mcp:call",
        "resource": guarded_upstream.url,
        "user": {"sub": "alice-sub"},
    }
    expired = authorization_server.mint(aud=guarded_upstream.url, expires_in=-10)

    def setup() -> tuple[str, str]:
        alice = UserFactory(username="alice", is_staff=True)
        bob = UserFactory(username="bob", is_staff=True)
        gateway = per_user_gateway(
            guarded_upstream.url,
            auth_type=AuthType.OAUTH_USER,
            oauth_token_url=f"{authorization_server.issuer}/token",
            oauth_client_id=client_info["client_id"],
        )
        for user, refresh in ((alice, "rt-alice"), (bob, "rt-unknown")):
            services.user_credentials_set(
                user=user,
                gateway=gateway,
                credentials={"access_token": expired, "refresh_token": refresh, "expires_at": time.time() - 1},
            )
        return auth.token_issue(username="alice"), auth.token_issue(username="bob")

    alice_token, bob_token = await sync_to_async(setup)()
    answer = await call_echo(alice_token, "refreshed")
    assert answer["result"]["content"][0]["text"] == "refreshed", answer
    assert authorization_server.grants == ["refresh_token"]
    used = (await asyncio.to_thread(seen, guarded_upstream))[-1]
    assert used != f"Bearer {expired}"

    def stored(username: str) -> dict[str, Any]:
        return UpstreamCredential.objects.get(user__username=username).get_credentials()

    alice_now = await sync_to_async(stored)("alice")
    assert used == f"Bearer {alice_now['access_token']}"
    assert alice_now["refresh_token"] != "rt-alice"
    answer = await call_echo(bob_token, "no")
    assert "could not be refreshed" in answer["error"]["message"]
    assert "connect your account for gateway 'fx' again" in answer["error"]["message"]


# -- the admin's gateway form ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_makes_per_user_and_oauth_gateways_without_showing_the_secret(admin_user):
    """A per-user bearer gateway needs no token of its own; an OAuth client-credentials gateway stores its client
    secret encrypted and never renders it; a missing client id is a message on the form."""
    from tests.registry.test_admin import form_values

    client = Client()
    client.force_login(admin_user)
    blank = form_values(client.get("/admin/registry/gateway/add/"))
    made = client.post(
        "/admin/registry/gateway/add/",
        {**blank, "name": "mine", "url": "https://u/mcp", "auth_type": "bearer", "per_user_credentials": "on"},
    )
    assert made.status_code == 302, made.context["adminform"].form.errors if made.context else made
    gateway = Gateway.objects.get(name="mine")
    assert gateway.per_user_credentials
    assert gateway.credentials_encrypted == ""
    values = {
        **blank,
        "name": "robot",
        "url": "https://u/mcp",
        "auth_type": "oauth2-client",
        "oauth_token_url": "https://as.example/token",
        "client_secret": "client-secret-77",
    }
    refused = client.post("/admin/registry/gateway/add/", values)
    assert refused.status_code == 200
    assert "client id" in refused.content.decode()
    made = client.post("/admin/registry/gateway/add/", {**values, "oauth_client_id": "gw"})
    assert made.status_code == 302
    robot = Gateway.objects.get(name="robot")
    assert robot.get_credentials() == {"client_secret": "client-secret-77"}
    assert "client-secret-77" not in client.get(f"/admin/registry/gateway/{robot.pk}/change/").content.decode()


@pytest.mark.django_db
def test_connect_discovers_the_oauth_endpoints_from_the_upstreams_metadata(authorization_server):
    """An oauth2-user gateway without URLs: the upstream's RFC 9728 document names the authorization server,
    whose RFC 8414 metadata gives the authorization endpoint the user is sent to; no metadata: a sentence."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    issuer = authorization_server.issuer

    class Metadata(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            if self.path == "/.well-known/oauth-protected-resource/mcp":
                body = json.dumps({"resource": "x", "authorization_servers": [issuer]}).encode()
                self.send_response(200)
            else:
                body = b"{}"
                self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        client_info = authorization_server.register(redirect_uris=["http://testserver/accounts/upstreams/callback/"])
        per_user_gateway(
            f"http://127.0.0.1:{port}/mcp", auth_type=AuthType.OAUTH_USER, oauth_client_id=client_info["client_id"]
        )
        GatewayFactory(
            name="bare",
            url="http://127.0.0.1:9/mcp",
            auth_type=AuthType.OAUTH_USER,
            per_user_credentials=True,
            oauth_client_id="x",
        )
        browser = Client()
        browser.force_login(UserFactory(username="alice"))
        started = browser.post("/accounts/upstreams/fx/connect/")
        assert started.status_code == 302
        assert started["Location"].startswith(f"{issuer}/authorize?")
        failed = browser.post("/accounts/upstreams/bare/connect/", follow=True)
        assert b"publishes no RFC 9728 metadata" in failed.content
    finally:
        server.shutdown()
        server.server_close()


# -- federation: syncs and health checks of such gateways -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_client_credentials_gateway_is_synced_and_checked_with_its_own_token(guarded_upstream, authorization_server):
    """A sync and a health check (each on a connection of its own, outside the pool) fetch the gateway's
    OAuth token first, so the guarded upstream answers them."""
    from federation import health, sync

    client = authorization_server.register(
        token_endpoint_auth_method="client_secret_basic", grant_types=["client_credentials"]
    )
    gateway = GatewayFactory(
        name="fx-oauth",
        url=guarded_upstream.url,
        oauth_token_url=f"{authorization_server.issuer}/token",
        oauth_client_id=client["client_id"],
        oauth_scopes="mcp:call",
    )
    gateway.set_credentials(AuthType.OAUTH_CLIENT, {"client_secret": client["client_secret"]})
    gateway.save()
    run = sync.gateway_sync(gateway=gateway)
    assert run.ok, run.error
    assert Tool.objects.filter(gateway=gateway, original_name="echo").exists()
    result = health.gateway_check(gateway=gateway)
    assert result.ok, result.error
    assert "client_credentials" in authorization_server.grants


@pytest.mark.django_db(transaction=True)
def test_a_per_user_gateway_refusing_the_gateway_itself_is_healthy(guarded_upstream):
    """The probe carries no user's credentials; the upstream answering 401 is alive (users' calls carry theirs)."""
    from federation import health

    gateway = per_user_gateway(guarded_upstream.url)
    result = health.gateway_check(gateway=gateway)
    assert result.ok, result.error
    assert result.after == "healthy"
