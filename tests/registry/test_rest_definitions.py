"""The definition rules of REST tools (docs/tool-backends.md "REST"): a bad ``backend_config`` is
refused by the same service every entry point uses, with a message that names the key and says what
to write instead, and nothing is stored; a good one is stored with its defaults written out."""

from __future__ import annotations

import pytest

from registry import services
from registry.exceptions import InvalidInput
from registry.models import Tool
from tests.fixtures.tls import tls_material

URL = "https://api.example.com/v1/users/{user_id}/posts{?limit,page}"


def _create(config: dict, **fields) -> Tool:
    data = {"name": "posts", "integration_type": "rest", "backend_config": config, **fields}
    return services.entry_create(Tool, data=data)


def _refused(config: dict, **fields) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        _create(config, **fields)
    assert not Tool.objects.exists()
    return caught.value


@pytest.mark.django_db
def test_a_minimal_definition_is_stored_with_its_defaults_written_out():
    tool = _create({"url": URL})
    tool.refresh_from_db()
    assert tool.backend_config == {
        "url": URL,
        "method": "GET",
        "headers": {},
        "params": {},
        "body": {"encoding": "json", "argument": None, "content_type": None},
        "auth": {"type": "none"},
        "retries": 2,
        "verify_tls": True,
        "ca_bundle": "",
        "extract": None,
        "max_response_bytes": None,
    }


@pytest.mark.django_db
def test_a_full_definition_is_kept_and_normalised():
    """The method is upper-cased, a params entry whose name repeats the argument loses it, and the
    OpenAPI provenance the importer records is kept as it is."""
    config = {
        "url": URL,
        "method": "post",
        "headers": {"Accept": "application/json"},
        "params": {
            "user_id": {"in": "path", "name": "user_id"},
            "trace": {"in": "header", "name": "X-Trace-Id"},
            "q": {"in": "query"},
        },
        "body": {"encoding": "form"},
        "auth": {"type": "api_key", "in": "query", "name": "api_key"},
        "retries": 0,
        "verify_tls": False,
        "extract": "data.items[*].{id: id, title: title}",
        "max_response_bytes": 4096,
        "openapi": {"source": "https://api.example.com/openapi.json", "operation": "POST /v1/users"},
    }
    tool = Tool(name="posts", integration_type="rest", backend_config=config)
    tool.set_credentials({"key": "k"})
    tool.full_clean()
    assert tool.backend_config["method"] == "POST"
    assert tool.backend_config["params"] == {
        "user_id": {"in": "path"},
        "trace": {"in": "header", "name": "X-Trace-Id"},
        "q": {"in": "query"},
    }
    assert tool.backend_config["body"] == {"encoding": "form", "argument": None, "content_type": None}
    assert tool.backend_config["auth"] == {"type": "api_key", "in": "query", "name": "api_key"}
    assert tool.backend_config["openapi"] == config["openapi"]


BAD = [
    ({}, "url: a REST tool needs the URL template of its endpoint"),
    ({"url": "https://api.example.com/users/{id"}, "the '{' after 'https://api.example.com/users/' is never closed"),
    ({"url": "https://api.example.com/users/id}"}, "closes no expression"),
    ({"url": "https://api.example.com/users/{user id}"}, "{user id} is not a valid expression"),
    ({"url": "https://api.example.com/users/{@id}"}, "{@id} is not a valid expression"),
    (
        {"url": "https://api.example.com/a b"},
        "the character ' ' after 'https://api.example.com/a' must be percent-encoded",
    ),
    ({"url": "https://api.example.com/caf\u00e9"}, "must be percent-encoded"),
    ({"url": "ftp://files.example.com/{name}"}, "must start with http:// or https://"),
    ({"url": "file:///etc/{name}"}, "must start with http:// or https://"),
    ({"url": "https://{host}/v1"}, "names no host"),
    ({"url": "https://api{.region}.example.com/v1"}, "variables reach the scheme or host"),
    ({"url": "https://user:pw@api.example.com/v1"}, "must not hold a user name or password"),
    ({"url": URL, "method": "FETCH"}, "method: 'FETCH' is not one of GET, POST"),
    ({"url": URL, "headers": {"Bad Header": "x"}}, "headers: 'Bad Header' is not a valid header name"),
    ({"url": URL, "headers": {"X-A": "one\r\nX-B: two"}}, "must have a one-line string value"),
    ({"url": URL, "headers": {"authorization": "Bearer abc"}}, "Authorization is set through auth"),
    ({"url": URL, "params": {"x": {"in": "cookie"}}}, "params.x.in: 'cookie' is not one of path, query, header, body"),
    ({"url": URL, "params": {"x": {"in": "path"}}}, "params.x: the URL template has no variable {x}"),
    ({"url": URL, "params": {"x": {"in": "query", "style": "form"}}}, "params.x: unknown keys 'style'"),
    ({"url": URL, "params": {"x": {"in": "header", "name": "Authorization"}}}, "Authorization is set through auth"),
    ({"url": URL, "body": {"encoding": "xml"}}, "body.encoding: 'xml' is not one of json, form, raw"),
    ({"url": URL, "body": {"encoding": "raw"}}, "a raw body is the value of one argument"),
    (
        {"url": URL, "auth": {"type": "digest"}},
        "auth.type: 'digest' is not one of none, basic, bearer, api_key, oauth2",
    ),
    ({"url": URL, "auth": {"type": "bearer", "token": "abc"}}, "'token' is a secret: set it in the tool's credentials"),
    (
        {"url": URL, "auth": {"type": "api_key", "in": "cookie", "name": "k"}},
        "auth.in: 'cookie' must be header or query",
    ),
    ({"url": URL, "auth": {"type": "api_key"}}, "auth.name: an API key needs the name of its header"),
    ({"url": URL, "auth": {"type": "oauth2", "token_url": "not a url"}}, "auth.token_url: OAuth 2 client credentials"),
    (
        {"url": URL, "auth": {"type": "oauth2", "token_url": "https://id.example.com/t", "scopes": "read"}},
        "auth.scopes",
    ),
    ({"url": URL, "auth": {"type": "basic", "realm": "x"}}, "auth: unknown keys 'realm' for type 'basic'"),
    ({"url": URL, "retries": 9}, "retries: 9 must be a whole number from 0 to 5"),
    ({"url": URL, "retries": True}, "retries: True must be a whole number"),
    ({"url": URL, "verify_tls": "no"}, "verify_tls: must be true or false"),
    ({"url": URL, "ca_bundle": "not a certificate"}, "ca_bundle: must be PEM text"),
    (
        {"url": URL, "ca_bundle": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
        "ca_bundle: the certificates cannot be loaded",
    ),
    ({"url": URL, "extract": "data.items[*"}, "extract: 'data.items[*' is not a JMESPath expression"),
    ({"url": URL, "max_response_bytes": 0}, "max_response_bytes: 0 must be a whole number from 1 to"),
    ({"url": URL, "max_response_bytes": 10**12}, "GATEWAY_OUTBOUND_MAX_RESPONSE_BYTES"),
    ({"url": URL, "timeout_s": 3, "paginate": True}, "Unknown keys 'paginate', 'timeout_s'; a REST tool takes url"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("config", "message"), BAD, ids=[message[:40] for _, message in BAD])
def test_a_bad_definition_is_refused_with_a_message_naming_the_key_and_nothing_is_stored(config, message):
    error = _refused(config)
    assert "backend_config" in error.errors
    assert message in error.message, error.message


@pytest.mark.django_db
def test_every_problem_of_a_definition_is_reported_at_once():
    error = _refused({"url": "ftp://x/{a}", "method": "FETCH", "retries": -1, "extract": "["})
    messages = error.errors["backend_config"]
    assert len(messages) == 4
    assert any(m.startswith("url:") for m in messages)
    assert any(m.startswith("extract:") for m in messages)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("auth", "needed"),
    [
        ({"type": "basic"}, "username, password; missing: username, password"),
        ({"type": "bearer"}, "token; missing: token"),
        ({"type": "api_key", "in": "header", "name": "X-API-Key"}, "key; missing: key"),
        ({"type": "oauth2", "token_url": "https://id.example.com/token"}, "client_id, client_secret"),
    ],
)
def test_an_authentication_without_its_credentials_is_refused(auth, needed):
    """The secrets live in the tool's encrypted credentials; a definition that needs them cannot be
    saved without them, and the message lists the missing ones."""
    error = _refused({"url": URL, "auth": auth})
    assert "credentials" in error.errors
    assert needed in error.message


@pytest.mark.django_db
def test_partial_credentials_name_what_is_missing():
    tool = Tool(name="posts", integration_type="rest", backend_config={"url": URL, "auth": {"type": "basic"}})
    tool.set_credentials({"username": "alice"})
    with pytest.raises(Exception, match="missing: password"):
        tool.full_clean()


@pytest.mark.django_db
def test_credentials_are_stored_encrypted_and_read_back():
    tool = Tool(name="posts", integration_type="rest", backend_config={"url": URL, "auth": {"type": "bearer"}})
    tool.set_credentials({"token": "very-secret"})
    tool.full_clean()
    tool.save()
    stored = Tool.objects.get(name="posts")
    assert "very-secret" not in stored.credentials_encrypted
    assert stored.get_credentials() == {"token": "very-secret"}


@pytest.mark.django_db
def test_a_ca_bundle_in_pem_is_accepted():
    ca_pem, _ = tls_material()
    tool = _create({"url": URL, "ca_bundle": ca_pem})
    assert tool.backend_config["ca_bundle"] == ca_pem


@pytest.mark.django_db
def test_an_update_that_breaks_the_definition_changes_nothing():
    tool = _create({"url": URL})
    with pytest.raises(InvalidInput, match="method: 'FETCH'"):
        services.entry_update(tool, data={"backend_config": {"url": URL, "method": "FETCH"}})
    tool.refresh_from_db()
    assert tool.backend_config["method"] == "GET"


@pytest.mark.django_db
def test_reserved_expansion_in_the_path_is_allowed():
    """{+path} may carry slashes into the path; the backend still refuses a value that would move the
    request to another host (tested in tests/transports/test_rest_backend.py)."""
    tool = _create({"url": "https://api.example.com{+path}{?q}"})
    assert tool.backend_config["url"] == "https://api.example.com{+path}{?q}"
