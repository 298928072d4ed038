"""REST tools' authentication (basic, bearer, API key in a header or the query, OAuth 2 client
credentials with a token cache) and retries with backoff, only for idempotent methods
(docs/tool-backends.md "REST"). Spec: RFC 6749 section 4.4 (client credentials grant), RFC 9110
section 9.2.2 (idempotent methods), 2025-11-25 basic/utilities/progress."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

from tests.fixtures.http_api import (
    API_KEY,
    BASIC_PASSWORD,
    BASIC_USER,
    BEARER_TOKEN,
    OAUTH_CLIENT_ID,
    OAUTH_CLIENT_SECRET,
)
from tests.fixtures.servers import free_port
from tests.transports.rest_gateway import gateway, http_api, text_of, world  # noqa: F401
from transports.protocol.backends.rest import RestBackend

pytestmark = pytest.mark.django_db(transaction=True)
OAUTH = {"client_id": OAUTH_CLIENT_ID, "client_secret": OAUTH_CLIENT_SECRET}

# -- authentication --------------------------------------------------------------------------------------


async def test_basic_auth(gateway):  # noqa: F811
    credentials = {"username": BASIC_USER, "password": BASIC_PASSWORD}
    await gateway.add_tool(
        "me", {"url": gateway.api.url("/auth/basic"), "auth": {"type": "basic"}}, credentials=credentials
    )
    assert (await gateway.call("me"))["structuredContent"] == {"user": BASIC_USER}


async def test_wrong_basic_credentials_are_the_apis_401_as_an_error(gateway):  # noqa: F811
    credentials = {"username": BASIC_USER, "password": "not-it"}
    await gateway.add_tool(
        "me", {"url": gateway.api.url("/auth/basic"), "auth": {"type": "basic"}}, credentials=credentials
    )
    result = await gateway.call("me")
    assert result["isError"] is True
    assert text_of(result).startswith("HTTP 401 Unauthorized from GET")
    assert "not-it" not in text_of(result)


async def test_bearer_auth(gateway):  # noqa: F811
    config = {"url": gateway.api.url("/auth/bearer"), "auth": {"type": "bearer"}}
    await gateway.add_tool("b", config, credentials={"token": BEARER_TOKEN})
    assert (await gateway.call("b"))["structuredContent"] == {"bearer": True}


async def test_api_key_in_a_header(gateway):  # noqa: F811
    config = {
        "url": gateway.api.url("/auth/key-header"),
        "auth": {"type": "api_key", "in": "header", "name": "X-API-Key"},
    }
    await gateway.add_tool("k", config, credentials={"key": API_KEY})
    assert (await gateway.call("k"))["structuredContent"] == {"key": "header"}


async def test_api_key_in_the_query_is_masked_in_messages(gateway):  # noqa: F811
    """The key rides in the query string, and an error message shows the URL with the key hidden."""
    auth = {"type": "api_key", "in": "query", "name": "api_key"}
    await gateway.add_tool("k", {"url": gateway.api.url("/auth/key-query"), "auth": auth}, credentials={"key": API_KEY})
    await gateway.add_tool("k500", {"url": gateway.api.url("/status/500"), "auth": auth}, credentials={"key": API_KEY})
    assert (await gateway.call("k"))["structuredContent"] == {"key": "query"}
    result = await gateway.call("k500")
    assert result["isError"] is True
    assert f"{gateway.api.url('/status/500')}?api_key=***" in text_of(result)
    assert API_KEY not in text_of(result)


def _oauth(api, *, path: str = "/oauth/resource", **auth) -> dict:
    return {"url": api.url(path), "auth": {"type": "oauth2", "token_url": api.url("/oauth/token"), **auth}}


async def test_oauth_client_credentials_tokens_are_cached(gateway):  # noqa: F811
    """One token request for many calls (and for tools sharing the token URL, client and scopes); the
    scopes and audience are asked for, the client authenticates with HTTP Basic by default."""
    state = gateway.api.state
    await gateway.add_tool("r1", _oauth(gateway.api, scopes=["read", "write"], audience="api://x"), credentials=OAUTH)
    await gateway.add_tool("r2", _oauth(gateway.api, scopes=["read", "write"], audience="api://x"), credentials=OAUTH)
    for name in ("r1", "r2", "r1"):
        assert (await gateway.call(name))["structuredContent"] == {"token": "access-1"}
    assert state.token_requests == 1
    assert state.token_forms == [{"grant_type": "client_credentials", "scope": "read write", "audience": "api://x"}]


async def test_oauth_client_secret_can_go_in_the_form(gateway):  # noqa: F811
    await gateway.add_tool("r", _oauth(gateway.api, client_auth="body"), credentials=OAUTH)
    assert (await gateway.call("r"))["structuredContent"] == {"token": "access-1"}
    assert gateway.api.state.token_forms[0]["client_id"] == OAUTH_CLIENT_ID


async def test_an_oauth_token_is_fetched_again_shortly_before_it_expires(gateway):  # noqa: F811
    """The cache keeps a token until shortly before its expires_in runs out (the clock is the test's)."""
    now = [1000.0]
    gateway.use(RestBackend(allow_private=True, token_clock=lambda: now[0]))
    config = _oauth(gateway.api)
    config["auth"]["token_url"] = gateway.api.url("/oauth/token?expires_in=600")
    await gateway.add_tool("r", config, credentials=OAUTH)
    assert (await gateway.call("r"))["structuredContent"] == {"token": "access-1"}
    now[0] += 500  # well inside the lifetime
    assert (await gateway.call("r"))["structuredContent"] == {"token": "access-1"}
    now[0] += 90  # 590 s: within the refresh margin before 600
    assert (await gateway.call("r"))["structuredContent"] == {"token": "access-2"}
    assert gateway.api.state.token_requests == 2


async def test_a_401_fetches_a_new_token_once(gateway):  # noqa: F811
    """The API revoked the cached token: the call fetches a new one and repeats the request once."""
    await gateway.add_tool("r", _oauth(gateway.api), credentials=OAUTH)
    assert (await gateway.call("r"))["structuredContent"] == {"token": "access-1"}
    await asyncio.to_thread(_post, gateway.api.url("/oauth/revoke"))
    assert (await gateway.call("r"))["structuredContent"] == {"token": "access-2"}
    assert gateway.api.state.token_requests == 2


async def test_an_api_that_keeps_refusing_tokens_gets_one_new_token_not_more(gateway):  # noqa: F811
    await gateway.add_tool("r", _oauth(gateway.api, path="/auth/bearer"), credentials=OAUTH)
    result = await gateway.call("r")
    assert result["isError"] is True
    assert text_of(result).startswith("HTTP 401 Unauthorized")
    assert gateway.api.state.token_requests == 2


async def test_a_failing_token_request_is_an_error_without_the_secret(gateway):  # noqa: F811
    await gateway.add_tool("r", _oauth(gateway.api), credentials={**OAUTH, "client_secret": "wrong-secret"})
    result = await gateway.call("r")
    assert result["isError"] is True
    assert text_of(result).startswith(
        f"The OAuth token request to {gateway.api.url('/oauth/token')} failed: HTTP 401 Unauthorized"
    )
    assert "invalid_client" in text_of(result)
    assert "wrong-secret" not in text_of(result)


def _post(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10):
        pass


# -- retries -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
async def test_idempotent_methods_are_retried_on_503_with_progress(gateway, method):  # noqa: F811
    """Two 503s, then success: three requests, and each retry reported as progress (the test call asks
    for it with a progressToken)."""
    key = f"idem-{method}"
    await gateway.add_tool("f", {"url": gateway.api.url(f"/flaky/{key}?fail=2"), "method": method, "retries": 2})
    result, progress = await gateway.test_call("f")
    assert not result.get("isError"), result
    assert gateway.api.state.count(f"flaky:{key}") == 3
    assert [p["progress"] for p in progress] == [1, 2]
    assert all(p["total"] == 3 for p in progress)
    assert "HTTP 503: retrying" in progress[0]["message"]


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_non_idempotent_methods_are_never_retried(gateway, method):  # noqa: F811
    key = f"once-{method}"
    await gateway.add_tool("f", {"url": gateway.api.url(f"/flaky/{key}?fail=1"), "method": method, "retries": 5})
    result, progress = await gateway.test_call("f")
    assert result["isError"] is True
    assert text_of(result).startswith("HTTP 503 Service Unavailable")
    assert gateway.api.state.count(f"flaky:{key}") == 1
    assert progress == []


@pytest.mark.parametrize("status", [429, 502, 504])
async def test_the_other_retryable_statuses(gateway, status):  # noqa: F811
    await gateway.add_tool("f", {"url": gateway.api.url(f"/flaky/s{status}?fail=1&status={status}")})
    assert (await gateway.call("f"))["structuredContent"] == {"attempts": 2}


async def test_a_500_is_not_retried(gateway):  # noqa: F811
    await gateway.add_tool("f", {"url": gateway.api.url("/flaky/s500?fail=1&status=500")})
    assert (await gateway.call("f"))["isError"] is True
    assert gateway.api.state.count("flaky:s500") == 1


async def test_retries_stop_at_the_configured_number(gateway):  # noqa: F811
    await gateway.add_tool("f", {"url": gateway.api.url("/flaky/many?fail=10"), "retries": 1})
    result = await gateway.call("f")
    assert text_of(result).startswith("HTTP 503 Service Unavailable from GET")
    assert "(after 2 attempts)" in text_of(result)
    assert gateway.api.state.count("flaky:many") == 2


async def test_retry_after_is_honoured_only_within_the_time_left(gateway):  # noqa: F811
    """Retry-After: 0 is waited and retried; a Retry-After longer than the tool's timeout ends the call
    at once with the API's answer rather than waiting into a timeout."""
    await gateway.add_tool("soon", {"url": gateway.api.url("/flaky/soon?fail=1&status=429&retry_after=0")})
    await gateway.add_tool("late", {"url": gateway.api.url("/flaky/late?fail=1&retry_after=3600")}, timeout=30)
    assert (await gateway.call("soon"))["structuredContent"] == {"attempts": 2}
    result = await gateway.call("late")
    assert text_of(result).startswith("HTTP 503 Service Unavailable")
    assert gateway.api.state.count("flaky:late") == 1


async def test_connection_failures_are_retried_for_get_but_not_post(gateway):  # noqa: F811
    port = free_port()  # nothing listens there
    await gateway.add_tool("get", {"url": f"http://127.0.0.1:{port}/x", "retries": 2})
    await gateway.add_tool("post", {"url": f"http://127.0.0.1:{port}/x", "method": "POST", "retries": 2})
    result, progress = await gateway.test_call("get")
    assert result["isError"] is True
    assert text_of(result).startswith(f"Could not reach http://127.0.0.1:{port}/x")
    assert text_of(result).endswith("(after 3 attempts)")
    assert len(progress) == 2
    result, progress = await gateway.test_call("post")
    assert "after" not in text_of(result)
    assert progress == []
