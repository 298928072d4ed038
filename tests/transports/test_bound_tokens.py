"""A token bound to one virtual server opens only that server's MCP endpoints: the edge's one admission
function (`transports.edge.admit`) refuses it with 403 and a sentence naming its server on the whole
catalog's endpoints (/mcp, /sse, /ws, /rpc) and on other servers', and admits it on its own; the check
uses only the cached Principal (no query). In process for admit and /rpc, then against a live gateway
(daphne) over Streamable HTTP, HTTP+SSE, WebSocket and JSON-RPC."""

from __future__ import annotations

import json
import time

import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from registry import auth
from tests.factories import UserFactory, VirtualServerFactory
from tests.transports.test_streamable_http import ACCEPT, init_body
from transports import edge

HEADERS = {"host": "localhost"}


def _close_connection() -> None:
    from django.db import connection

    connection.close()


@pytest.fixture(autouse=True)
async def _close_worker_connections():
    yield
    await sync_to_async(_close_connection)()


@pytest.fixture
def tokens(db):
    """Servers 'pair' and 'other'; a staff user's token bound to 'pair' and an unbound one."""
    edge.credentials.clear()
    UserFactory(username="bound", is_staff=True)
    VirtualServerFactory(name="pair")
    VirtualServerFactory(name="other")
    yield {
        "bound": f"Bearer {auth.token_issue(username='bound', server='pair')}",
        "unbound": f"Bearer {auth.token_issue(username='bound')}",
    }
    edge.credentials.clear()


# -- admit, in process ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server", [None, "other", "nowhere"])
async def test_admit_refuses_a_bound_token_elsewhere_with_403_naming_its_server(tokens, server):
    with pytest.raises(edge.EdgeRefused) as refused:
        await edge.admit(HEADERS, server, tokens["bound"])
    assert refused.value.status == 403
    assert "this token is bound to virtual server 'pair'" in refused.value.message
    assert "/servers/pair/mcp" in refused.value.message
    assert refused.value.headers == []  # not a credentials problem: no WWW-Authenticate challenge


@pytest.mark.django_db(transaction=True)
async def test_admit_lets_a_bound_token_use_its_own_server(tokens):
    caller = await edge.admit(HEADERS, "pair", tokens["bound"])
    assert (caller.username, caller.server) == ("bound", "pair")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server", [None, "pair", "other"])
async def test_admit_lets_an_unbound_token_use_every_endpoint(tokens, server):
    caller = await edge.admit(HEADERS, server, tokens["unbound"])
    assert caller.server == server


@pytest.mark.django_db(transaction=True)
async def test_the_server_check_makes_no_query_once_the_credentials_are_cached(tokens, django_db_blocker):
    """architecture "Rules for the hot path": admitting and refusing a cached bound token touch no database."""
    await edge.admit(HEADERS, "pair", tokens["bound"])
    with django_db_blocker.block():
        for _ in range(3):
            assert (await edge.admit(HEADERS, "pair", tokens["bound"])).server == "pair"
            with pytest.raises(edge.EdgeRefused):
                await edge.admit(HEADERS, None, tokens["bound"])
            with pytest.raises(edge.EdgeRefused):
                await edge.admit(HEADERS, "other", tokens["bound"])


@pytest.mark.django_db(transaction=True)
async def test_a_bound_token_whose_server_was_deleted_is_401(tokens):
    from registry.models import VirtualServer

    await sync_to_async(VirtualServer.objects.filter(name="pair").delete)()
    with pytest.raises(edge.EdgeRefused) as refused:
        await edge.admit(HEADERS, "pair", tokens["bound"])
    assert refused.value.status == 401
    assert "no longer exists" in refused.value.message


@pytest.mark.django_db(transaction=True)
async def test_the_rpc_endpoints_refuse_a_bound_token_elsewhere(tokens):
    """POST /rpc and /servers/other/rpc: 403 with a JSON-RPC error; /servers/pair/rpc answers."""
    client = AsyncClient()
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    for path, status in (("/rpc", 403), ("/servers/other/rpc", 403), ("/servers/pair/rpc", 200)):
        response = await client.post(
            path, data=body, content_type="application/json", headers={"Authorization": tokens["bound"]}
        )
        assert response.status_code == status, (path, response.content)
        answer = json.loads(response.content)
        if status == 403:
            assert answer["error"]["code"] == -32600
            assert "bound to virtual server 'pair'" in answer["error"]["message"]
        else:
            assert answer["result"] == {}


# -- a live gateway: every transport --------------------------------------------------------------------


@pytest.fixture(scope="module")
def bound_gateway(live_gateway):
    """On the session's live gateway: servers 'bound-pair' and 'bound-other', a token bound to 'bound-pair'."""
    live = live_gateway
    for name in ("bound-pair", "bound-other"):
        status, body = live.api("POST", "/api/servers", {"name": name})
        assert status == 201, body
    return live, _issue(live)["token"]


def _issue(live) -> dict:
    """A token bound to 'bound-pair', issued by the admin through the REST API: {"token", "jti", ...}."""
    status, body = live.api("POST", "/api/tokens", {"server": "bound-pair", "name": "test"})
    assert status == 201, body
    return body


def post_mcp(live, path: str, token: str) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}", "Accept": ACCEPT, "Content-Type": "application/json"}
    return httpx2.post(live.url + path, content=json.dumps(init_body()).encode(), headers=headers, timeout=20)


@pytest.mark.parametrize("path", ["/mcp", "/servers/bound-other/mcp"])
def test_streamable_http_refuses_a_bound_token_elsewhere(bound_gateway, path):
    live, token = bound_gateway
    response = post_mcp(live, path, token)
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == -32600
    assert "bound to virtual server 'bound-pair'" in error["message"]


def test_streamable_http_serves_a_bound_token_on_its_server(bound_gateway):
    live, token = bound_gateway
    response = post_mcp(live, "/servers/bound-pair/mcp", token)
    assert response.status_code == 200, response.text
    assert response.headers["mcp-session-id"]


@pytest.mark.parametrize(("path", "status"), [("/sse", 403), ("/servers/bound-other/sse", 403)])
def test_sse_refuses_a_bound_token_elsewhere(bound_gateway, path, status):
    live, token = bound_gateway
    response = httpx2.get(
        live.url + path, headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}, timeout=20
    )
    assert response.status_code == status
    assert "bound to virtual server 'bound-pair'" in response.json()["error"]["message"]


def test_sse_opens_a_stream_for_a_bound_token_on_its_server(bound_gateway):
    live, token = bound_gateway
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    with httpx2.stream("GET", live.url + "/servers/bound-pair/sse", headers=headers, timeout=20) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                assert line.split(":", 1)[1].strip().startswith("/servers/bound-pair/message?session_id=")
                break


def _ws(live, path: str, token: str):
    return connect(
        live.url.replace("http://", "ws://") + path,
        subprotocols=["mcp"],
        additional_headers={"Authorization": f"Bearer {token}"},
        open_timeout=10,
    )


@pytest.mark.parametrize("path", ["/ws", "/servers/bound-other/ws"])
def test_websocket_refuses_a_bound_token_elsewhere_saying_why(bound_gateway, path):
    """The socket sends a JSON-RPC error naming the bound server, then closes."""
    live, token = bound_gateway
    with _ws(live, path, token) as socket:
        message = json.loads(socket.recv(timeout=10))
        assert "bound to virtual server 'bound-pair'" in message["error"]["message"]
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
        assert closed.value.rcvd.code == 4403  # forbidden, not 4401: the credentials are valid


def test_websocket_serves_a_bound_token_on_its_server(bound_gateway):
    live, token = bound_gateway
    with _ws(live, "/servers/bound-pair/ws", token) as socket:
        socket.send(json.dumps(init_body()))
        answer = json.loads(socket.recv(timeout=10))
        assert answer["id"] == 1
        assert "result" in answer


def test_rpc_and_rest_refuse_a_bound_token_and_its_own_rpc_serves_it(bound_gateway):
    live, token = bound_gateway
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    ping = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert httpx2.post(live.url + "/rpc", content=ping, headers=headers, timeout=20).status_code == 403
    assert httpx2.post(live.url + "/servers/bound-pair/rpc", content=ping, headers=headers, timeout=20).json() == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {},
    }
    rest = httpx2.get(live.url + "/api/tools", headers=headers, timeout=20)
    assert rest.status_code == 403
    assert "only opens its MCP endpoints" in rest.json()["detail"]


def test_a_revoked_bound_token_is_401_on_its_own_server(bound_gateway):
    """Revoked by its id (the service the admin's button uses): refused once the edge's credential cache
    (GATEWAY_AUTH_CACHE_SECONDS=1 on the live gateway) has let it go."""
    live, _ = bound_gateway
    issued = _issue(live)
    token = issued["token"]
    assert post_mcp(live, "/servers/bound-pair/mcp", token).status_code == 200
    status, body = live.api("POST", f"/api/tokens/{issued['jti']}/revoke")
    assert status == 200, body
    time.sleep(1.5)
    response = post_mcp(live, "/servers/bound-pair/mcp", token)
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


@pytest.mark.django_db(transaction=True)
async def test_the_well_known_document_refuses_a_bound_token(tokens):
    """/.well-known/mcp-gateway reads credentials like the REST API, so a bound token is refused there too."""
    response = await AsyncClient().get("/.well-known/mcp-gateway", headers={"Authorization": tokens["bound"]})
    assert response.status_code == 403
    assert "only opens its MCP endpoints" in json.loads(response.content)["detail"]
