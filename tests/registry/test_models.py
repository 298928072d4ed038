"""The catalog's validation rules, applied through the services (the path of the admin, the API and imports)."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings

from registry import crypto, events, prompts, services
from registry.choices import AuthType, IntegrationType, Transport
from registry.exceptions import Conflict, InvalidInput, SecretError
from registry.models import Gateway, Prompt, Resource, ResourceTemplate, Tool, VirtualServer
from tests.factories import (
    GatewayFactory,
    PromptFactory,
    ResourceFactory,
    ToolFactory,
)

pytestmark = pytest.mark.django_db

PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUXyZ\n-----END CERTIFICATE-----\n"


def create(model, **data):
    return services.entry_create(model, data=data)


def rejected(model, **data) -> InvalidInput:
    """Create an entry that must be refused; return the error (and check nothing was stored)."""
    before = model.objects.count()
    with pytest.raises(InvalidInput) as info:
        services.entry_create(model, data=data)
    assert model.objects.count() == before
    assert info.value.status == 422
    return info.value


@pytest.fixture
def gateway():
    return GatewayFactory(name="upstream")


# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a", "Z", "7", "x" * 128, "get.weather", "get-weather", "get_weather", "v1.2_beta-3", "...", "-_."],
)
def test_tool_name_accepts_1_to_128_letters_digits_dots_dashes_underscores(gateway, name):
    """Tool names of 1 to 128 characters from [A-Za-z0-9_.-] are valid."""
    tool = create(Tool, name=name, gateway="upstream")
    tool.refresh_from_db()
    assert tool.name == name


@pytest.mark.parametrize(
    "name",
    [
        "x" * 129,
        "",
        "has space",
        "a/b",
        "a:b",
        "tool\n",
        "\ttool",
        "café",
        "ツール",
        "a\u00a0b",
    ],
)
def test_tool_name_rejects_bad_names(gateway, name):
    """Too long, empty, whitespace, slashes, colons and non-ASCII letters are refused on the name field."""
    error = rejected(Tool, name=name, gateway="upstream")
    assert list(error.errors) == ["name"]


def test_tool_name_must_be_unique_and_reports_a_conflict(gateway):
    """A second tool with a taken name is a Conflict (409) on the name field."""
    create(Tool, name="search", gateway="upstream")
    with pytest.raises(Conflict) as info:
        create(Tool, name="search", gateway="upstream")
    assert info.value.status == 409
    assert info.value.errors == {"name": ["Already taken."]}
    assert Tool.objects.filter(name="search").count() == 1


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {"unit": {"enum": ["C", "F"]}},
            "properties": {"unit": {"$ref": "#/$defs/unit"}, "days": {"type": "integer", "minimum": 1}},
            "additionalProperties": False,
        },
    ],
)
def test_input_schema_accepts_object_json_schemas(gateway, schema):
    """Any valid JSON Schema 2020-12 with an object root is a valid input schema."""
    tool = create(Tool, name="t", gateway="upstream", input_schema=schema)
    tool.refresh_from_db()
    assert tool.input_schema == schema


def test_input_schema_defaults_to_an_empty_object_schema(gateway):
    """A tool created without an input schema gets {"type": "object", "properties": {}}."""
    tool = create(Tool, name="t", gateway="upstream")
    assert tool.input_schema == {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "string"}, "root must be"),
        ({"properties": {}}, "root must be"),
        ({"type": "array", "items": {"type": "string"}}, "root must be"),
        ({"type": "object", "properties": {"x": {"type": "strng"}}}, "properties/x/type"),
        ({"type": "object", "required": "x"}, "Not a valid JSON Schema (2020-12)"),
        ({"type": "object", "minProperties": -1}, "Not a valid JSON Schema (2020-12)"),
        (["type", "object"], "must be a JSON object"),
        ("object", "must be a JSON object"),
    ],
)
def test_input_schema_rejects_invalid_or_non_object_schemas(gateway, schema, message):
    """Invalid JSON Schemas and schemas whose root is not an object are refused on input_schema."""
    error = rejected(Tool, name="t", gateway="upstream", input_schema=schema)
    assert list(error.errors) == ["input_schema"]
    assert message in error.errors["input_schema"][0]


def test_output_schema_is_optional_but_validated_like_the_input_schema(gateway):
    """output_schema may be null or an object schema; anything else is refused on output_schema."""
    assert create(Tool, name="a", gateway="upstream", output_schema=None).output_schema is None
    schema = {"type": "object", "properties": {"temp": {"type": "number"}}}
    assert create(Tool, name="b", gateway="upstream", output_schema=schema).output_schema == schema
    error = rejected(Tool, name="c", gateway="upstream", output_schema={"type": "number"})
    assert list(error.errors) == ["output_schema"]


@pytest.mark.parametrize(
    "annotations",
    [
        {},
        {"title": "Weather", "readOnlyHint": True, "destructiveHint": False},
        {"idempotentHint": True, "openWorldHint": False},
        {"vendor.custom": {"any": ["json", 1]}},
    ],
)
def test_annotations_accept_standard_hints_with_their_types_and_extra_keys(gateway, annotations):
    """The standard hints are typed; other keys are free-form JSON."""
    assert create(Tool, name="t", gateway="upstream", annotations=annotations).annotations == annotations


@pytest.mark.parametrize(
    "annotations",
    [
        {"readOnlyHint": "yes"},
        {"destructiveHint": 1},
        {"idempotentHint": None},
        {"openWorldHint": "false"},
        {"title": 5},
        {"title": True},
        ["readOnlyHint"],
    ],
)
def test_annotations_reject_wrongly_typed_standard_hints(gateway, annotations):
    """A hint that is not a boolean, a title that is not a string, or a non-object is refused."""
    error = rejected(Tool, name="t", gateway="upstream", annotations=annotations)
    assert list(error.errors) == ["annotations"]


def test_tags_are_stripped_deduplicated_and_sorted(gateway):
    """Tags are stored trimmed, once each, in sorted order; blank-after-trim tags are dropped."""
    tool = create(Tool, name="t", gateway="upstream", tags=["web", " search", "web", "alpha ", " "])
    tool.refresh_from_db()
    assert tool.tags == ["alpha", "search", "web"]


@pytest.mark.parametrize("tags", [[""], ["x" * 65], [1], "web,search", {"web": True}])
def test_tags_reject_non_lists_empty_long_and_non_string_tags(gateway, tags):
    """Tags must be a list of strings of 1-64 characters."""
    error = rejected(Tool, name="t", gateway="upstream", tags=tags)
    assert list(error.errors) == ["tags"]


def test_mcp_tool_needs_a_gateway():
    """A tool of integration type mcp without a gateway is refused on the gateway field."""
    error = rejected(Tool, name="t", integration_type=IntegrationType.MCP)
    assert list(error.errors) == ["gateway"]


@pytest.mark.parametrize(
    ("integration_type", "backend_config"),
    [
        (IntegrationType.REST, {"url": "https://x"}),
        (IntegrationType.CLI, {"command": "/bin/true"}),
        (IntegrationType.FUNCTION, {"function": "tests.fixtures.functions.add"}),
    ],
)
def test_non_mcp_tool_must_not_have_a_gateway(gateway, integration_type, backend_config):
    """REST, CLI and function tools cannot come from a gateway, and are valid without one."""
    error = rejected(Tool, name="t", integration_type=integration_type, gateway="upstream")
    assert list(error.errors) == ["gateway"]
    tool = create(Tool, name="t", integration_type=integration_type, backend_config=backend_config)
    assert tool.gateway is None


def test_mcp_tool_takes_no_backend_config(gateway):
    """backend_config is for wrapped backends; an MCP tool with one is refused."""
    error = rejected(Tool, name="t", gateway="upstream", backend_config={"url": "https://x"})
    assert list(error.errors) == ["backend_config"]


def test_tool_gateway_must_exist():
    """Naming a gateway that does not exist is refused on the gateway field."""
    error = rejected(Tool, name="t", gateway="nowhere")
    assert error.errors == {"gateway": ["No gateway named 'nowhere'."]}


def test_tool_timeout_must_be_positive(gateway):
    """A timeout of zero or less is refused; a positive one is kept."""
    assert create(Tool, name="a", gateway="upstream", timeout=2.5).timeout == 2.5
    error = rejected(Tool, name="b", gateway="upstream", timeout=0)
    assert list(error.errors) == ["timeout"]


def test_tool_create_bumps_the_catalog_version(gateway):
    """Every successful write raises the catalog version by one; a refused one does not."""
    before = events.catalog_version()
    create(Tool, name="t", gateway="upstream")
    assert events.catalog_version() == before + 1
    rejected(Tool, name="bad name", gateway="upstream")
    assert events.catalog_version() == before + 1


# ---------------------------------------------------------------------------------------------
# Gateways: transports
# ---------------------------------------------------------------------------------------------


def test_stdio_gateway_with_command_args_env_and_cwd_is_valid():
    """A stdio gateway needs a command and may have args, env and a working directory."""
    gateway = create(
        Gateway,
        name="local",
        transport=Transport.STDIO,
        command="uvx",
        args=["mcp-server-time", "--local-timezone=UTC"],
        env={"LOG_LEVEL": "debug", "_X1": ""},
        cwd="/srv",
    )
    gateway.refresh_from_db()
    assert (gateway.command, gateway.args, gateway.env, gateway.cwd) == (
        "uvx",
        ["mcp-server-time", "--local-timezone=UTC"],
        {"LOG_LEVEL": "debug", "_X1": ""},
        "/srv",
    )


@pytest.mark.parametrize("transport", [Transport.SSE, Transport.WEBSOCKET])
def test_the_2026_era_cannot_be_forced_where_it_has_no_transport(transport):
    """MCP 2026-07-28 is specified for Streamable HTTP and stdio only; SSE and WebSocket speak the session era."""
    url = "ws://127.0.0.1/ws" if transport == Transport.WEBSOCKET else "http://127.0.0.1/sse"
    error = rejected(Gateway, name="old", transport=transport, url=url, era="modern")
    assert list(error.errors) == ["era"]
    for era in ("auto", "legacy"):
        assert services.entry_create(
            Gateway, data={"name": f"ok-{era}", "transport": transport, "url": url, "era": era}
        )


def test_gateway_era_defaults_to_auto_and_is_checked():
    gateway = services.entry_create(Gateway, data={"name": "plain", "url": "http://127.0.0.1/mcp"})
    assert (gateway.era, gateway.detected_era) == ("auto", "")
    error = rejected(Gateway, name="odd", url="http://127.0.0.1/mcp", era="future")
    assert list(error.errors) == ["era"]


def test_stdio_gateway_needs_a_command():
    """A stdio gateway without a command is refused on the command field."""
    error = rejected(Gateway, name="local", transport=Transport.STDIO)
    assert list(error.errors) == ["command"]


def test_stdio_gateway_must_not_have_a_url():
    """A stdio gateway with a URL is refused on the url field."""
    error = rejected(Gateway, name="local", transport=Transport.STDIO, command="srv", url="http://h/mcp")
    assert list(error.errors) == ["url"]


@pytest.mark.parametrize(
    ("transport", "url"),
    [
        (Transport.STREAMABLE_HTTP, "http://127.0.0.1:8080/mcp"),
        (Transport.STREAMABLE_HTTP, "https://mcp.example.com/mcp"),
        (Transport.SSE, "http://localhost/sse"),
        (Transport.SSE, "https://mcp.example.com/sse"),
        (Transport.WEBSOCKET, "ws://127.0.0.1/ws"),
        (Transport.WEBSOCKET, "wss://mcp.example.com/ws"),
    ],
)
def test_remote_gateway_accepts_urls_of_its_transports_schemes(transport, url):
    """http(s) for streamable HTTP and SSE, ws(s) for WebSocket."""
    assert create(Gateway, name="remote", transport=transport, url=url).url == url


@pytest.mark.parametrize(
    ("transport", "url"),
    [
        (Transport.STREAMABLE_HTTP, ""),
        (Transport.STREAMABLE_HTTP, "ws://h/mcp"),
        (Transport.STREAMABLE_HTTP, "ftp://h/mcp"),
        (Transport.STREAMABLE_HTTP, "http://"),
        (Transport.STREAMABLE_HTTP, "/relative/mcp"),
        (Transport.STREAMABLE_HTTP, "mcp.example.com"),
        (Transport.SSE, ""),
        (Transport.SSE, "wss://h/sse"),
        (Transport.WEBSOCKET, ""),
        (Transport.WEBSOCKET, "http://h/ws"),
        (Transport.WEBSOCKET, "https://h/ws"),
        (Transport.WEBSOCKET, "ws://"),
    ],
)
def test_remote_gateway_rejects_missing_or_wrong_scheme_urls(transport, url):
    """A remote gateway needs a URL with its transport's scheme and a host; the error is on url."""
    error = rejected(Gateway, name="remote", transport=transport, url=url)
    assert list(error.errors) == ["url"]


@pytest.mark.parametrize("extra", [{"command": "srv"}, {"args": ["-v"]}, {"env": {"A": "1"}}, {"cwd": "/tmp"}], ids=str)
def test_remote_gateway_rejects_stdio_only_fields(extra):
    """command, args, env and cwd belong to stdio gateways only."""
    error = rejected(Gateway, name="remote", url="http://h/mcp", **extra)
    assert list(error.errors) == ["command"]


@pytest.mark.parametrize(
    "env", [{"1BAD": "x"}, {"WITH SPACE": "x"}, {"A-B": "x"}, {"NAME\n": "x"}, {"OK": 1}, ["A=1"]], ids=str
)
def test_stdio_gateway_rejects_bad_environment(env):
    """Environment names are letters, digits and '_' (not starting with a digit); values are strings."""
    error = rejected(Gateway, name="local", transport=Transport.STDIO, command="srv", env=env)
    assert list(error.errors) == ["env"]


def test_stdio_gateway_args_must_be_strings():
    """args must be a list of strings."""
    error = rejected(Gateway, name="local", transport=Transport.STDIO, command="srv", args=["-p", 8080])
    assert list(error.errors) == ["args"]


@pytest.mark.parametrize("name", ["Upper", "a b", "-lead", "", "x" * 65, "über", "a.b", "ok\n"])
def test_gateway_name_must_be_a_lowercase_slug(name):
    """Gateway names: 1-64 lowercase letters, digits, '-' and '_', starting with a letter or digit."""
    error = rejected(Gateway, name=name, url="http://h/mcp")
    assert list(error.errors) == ["name"]


def test_ca_bundle_must_be_pem():
    """A CA bundle that is not PEM text is refused; a PEM certificate block is accepted."""
    error = rejected(Gateway, name="remote", url="https://h/mcp", ca_bundle="not a certificate")
    assert list(error.errors) == ["ca_bundle"]
    assert create(Gateway, name="remote", url="https://h/mcp", ca_bundle=PEM_CERT).ca_bundle == PEM_CERT


# ---------------------------------------------------------------------------------------------
# Gateways: credentials
# ---------------------------------------------------------------------------------------------


def stored_row(gateway: Gateway) -> tuple:
    """Every column of the gateway's row, read with plain SQL (what is really at rest)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {Gateway._meta.db_table} WHERE id = %s", [gateway.pk])
        return cursor.fetchone()


@pytest.mark.parametrize(
    ("auth_type", "credentials", "secret"),
    [
        (AuthType.BASIC, {"username": "alice", "password": "s3cret-basic-pw"}, "s3cret-basic-pw"),
        (AuthType.BEARER, {"token": "tok-bearer-9f8e7d6c"}, "tok-bearer-9f8e7d6c"),
        (AuthType.HEADERS, {"headers": {"X-Api-Key": "key-headers-1a2b3c"}}, "key-headers-1a2b3c"),
    ],
)
def test_credentials_are_encrypted_at_rest_and_round_trip(auth_type, credentials, secret):
    """The database never holds a secret in clear; get_credentials gives back exactly what was stored."""
    gateway = create(Gateway, name="remote", url="https://h/mcp", auth_type=auth_type, credentials=credentials)
    row = stored_row(gateway)
    assert all(secret not in str(value) for value in row)
    stored = Gateway.objects.values_list("credentials_encrypted", flat=True).get(pk=gateway.pk)
    assert stored
    assert secret not in stored
    fresh = Gateway.objects.get(pk=gateway.pk)
    assert fresh.auth_type == auth_type
    assert fresh.has_credentials
    assert fresh.get_credentials() == credentials


def test_gateway_without_credentials_stores_nothing():
    """auth_type none stores no credentials and get_credentials is empty."""
    gateway = create(Gateway, name="remote", url="https://h/mcp")
    assert gateway.credentials_encrypted == ""
    assert not gateway.has_credentials
    assert gateway.get_credentials() == {}


@pytest.mark.parametrize(
    ("auth_type", "credentials"),
    [
        (AuthType.BASIC, {"username": "alice"}),
        (AuthType.BASIC, {"password": "pw"}),
        (AuthType.BASIC, {"username": "", "password": "pw"}),
        (AuthType.BASIC, {"username": "al:ice", "password": "pw"}),
        (AuthType.BASIC, {"username": "alice", "password": "pw\nX-Injected: 1"}),
        (AuthType.BASIC, None),
        (AuthType.BEARER, {}),
        (AuthType.BEARER, {"token": ""}),
        (AuthType.BEARER, {"token": "abc\r\n"}),
        (AuthType.BEARER, {"username": "alice", "password": "pw"}),
        (AuthType.HEADERS, {}),
        (AuthType.HEADERS, {"headers": {}}),
        (AuthType.HEADERS, {"headers": {"Bad Name": "v"}}),
        (AuthType.HEADERS, {"headers": {"X-Ok": "one\r\nX-Evil: two"}}),
        (AuthType.HEADERS, {"headers": {"X-Ok\n": "v"}}),
        (AuthType.HEADERS, {"headers": {"X-Ok": 5}}),
        (AuthType.HEADERS, {"headers": ["X-Ok: v"]}),
    ],
    ids=str,
)
def test_credentials_are_validated_per_auth_type(auth_type, credentials):
    """Basic needs username and password, bearer a token, headers valid names and one-line values."""
    data = {"name": "remote", "url": "https://h/mcp", "auth_type": auth_type}
    if credentials is not None:
        data["credentials"] = credentials
    error = rejected(Gateway, **data)
    assert list(error.errors) == ["credentials"]


def test_update_without_credentials_keeps_the_stored_ones():
    """Credentials are write-only: an update that does not mention them keeps them."""
    gateway = create(Gateway, name="remote", url="https://h/mcp", auth_type="bearer", credentials={"token": "t-1"})
    services.entry_update(gateway, data={"description": "changed", "auth_type": "bearer"})
    gateway = Gateway.objects.get(pk=gateway.pk)
    assert gateway.description == "changed"
    assert gateway.get_credentials() == {"token": "t-1"}


def test_update_with_new_credentials_replaces_them():
    """Sending credentials replaces the stored ones."""
    gateway = create(Gateway, name="remote", url="https://h/mcp", auth_type="bearer", credentials={"token": "t-1"})
    services.entry_update(gateway, data={"credentials": {"token": "t-2"}})
    assert Gateway.objects.get(pk=gateway.pk).get_credentials() == {"token": "t-2"}


def test_changing_auth_type_needs_new_credentials():
    """Switching bearer to basic without credentials is refused; switching to none clears them."""
    gateway = create(Gateway, name="remote", url="https://h/mcp", auth_type="bearer", credentials={"token": "t-1"})
    with pytest.raises(InvalidInput) as info:
        services.entry_update(gateway, data={"auth_type": "basic"})
    assert list(info.value.errors) == ["credentials"]
    gateway = Gateway.objects.get(pk=gateway.pk)
    assert gateway.auth_type == AuthType.BEARER
    assert gateway.get_credentials() == {"token": "t-1"}

    services.entry_update(gateway, data={"auth_type": "none"})
    gateway = Gateway.objects.get(pk=gateway.pk)
    assert gateway.auth_type == AuthType.NONE
    assert gateway.credentials_encrypted == ""
    assert gateway.get_credentials() == {}


# ---------------------------------------------------------------------------------------------
# Secrets at rest: keys and rotation
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def keys():
    """Three unrelated Fernet keys: old, new and another."""
    return {name: Fernet.generate_key().decode() for name in ("old", "new", "other")}


def bearer_gateway(name: str, token: str) -> Gateway:
    return create(Gateway, name=name, url="https://h/mcp", auth_type="bearer", credentials={"token": token})


def test_rotation_re_encrypts_with_the_newest_key(keys):
    """Old tokens decrypt with [new, old]; after rotate_secrets only [new] is needed; old keys alone fail."""
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[keys["old"]]):
        gateway = bearer_gateway("remote", "rotate-me-123")
        before = gateway.credentials_encrypted

    with override_settings(GATEWAY_ENCRYPTION_KEYS=[keys["new"], keys["old"]]):
        assert Gateway.objects.get(pk=gateway.pk).get_credentials() == {"token": "rotate-me-123"}
        out = io.StringIO()
        call_command("rotate_secrets", stdout=out)
        assert "1 gateway(s)" in out.getvalue()

    gateway.refresh_from_db()
    assert gateway.credentials_encrypted != before
    assert "rotate-me-123" not in gateway.credentials_encrypted
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[keys["new"]]):
        assert gateway.get_credentials() == {"token": "rotate-me-123"}
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[keys["old"]]), pytest.raises(SecretError):
        gateway.get_credentials()


def test_decrypting_with_an_unrelated_key_raises_secret_error(keys):
    """Credentials encrypted under one key cannot be read with another; the error says why."""
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[keys["old"]]):
        gateway = bearer_gateway("remote", "tok")
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[keys["other"]]), pytest.raises(SecretError) as info:
        Gateway.objects.get(pk=gateway.pk).get_credentials()
    assert "GATEWAY_ENCRYPTION_KEYS" in info.value.message
    assert info.value.status == 422


def test_default_key_derived_from_secret_key_is_not_any_configured_key(keys):
    """With no keys configured, secrets use a SECRET_KEY-derived key, which configured keys cannot open."""
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[]):
        gateway = bearer_gateway("remote", "tok")
        assert gateway.get_credentials() == {"token": "tok"}
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[keys["other"]]), pytest.raises(SecretError):
        Gateway.objects.get(pk=gateway.pk).get_credentials()


def test_rotation_is_all_or_nothing(keys):
    """When one gateway's secret cannot be decrypted, rotate_secrets fails and changes no row."""
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[keys["old"]]):
        first = bearer_gateway("a-first", "tok-a")
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[keys["other"]]):
        second = bearer_gateway("b-second", "tok-b")
    stored = dict(Gateway.objects.values_list("name", "credentials_encrypted"))

    with (
        override_settings(GATEWAY_ENCRYPTION_KEYS=[keys["new"], keys["old"]]),
        pytest.raises(CommandError, match="cannot be decrypted"),
    ):
        call_command("rotate_secrets")
    assert dict(Gateway.objects.values_list("name", "credentials_encrypted")) == stored
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[keys["old"]]):
        assert Gateway.objects.get(pk=first.pk).get_credentials() == {"token": "tok-a"}
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[keys["other"]]):
        assert Gateway.objects.get(pk=second.pk).get_credentials() == {"token": "tok-b"}


def test_rotation_skips_gateways_without_credentials(keys):
    """Gateways without credentials are not touched by rotation."""
    GatewayFactory(name="plain")
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[keys["new"]]):
        assert services.secrets_rotate() == 0
    assert Gateway.objects.get(name="plain").credentials_encrypted == ""


def test_encrypt_json_tokens_never_contain_the_plaintext():
    """A Fernet token is opaque: the JSON and its values are not readable in it."""
    token = crypto.encrypt_json({"token": "visible?"})
    assert "visible?" not in token
    assert crypto.decrypt_json(token) == {"token": "visible?"}


# ---------------------------------------------------------------------------------------------
# Resources and templates
# ---------------------------------------------------------------------------------------------


def test_resource_with_exactly_one_source_is_valid(gateway):
    """Text, binary content (with NUL bytes) or an upstream gateway: each alone is a valid source."""
    text = create(Resource, uri="file:///a.txt", name="a", text="hello")
    empty = create(Resource, uri="file:///empty.txt", name="empty", text="")
    blob = create(Resource, uri="file:///b.bin", name="b", blob=b"\x00\x01\xffPNG")
    upstream = create(Resource, uri="file:///c", name="c", gateway="upstream")
    blob.refresh_from_db()
    assert text.text == "hello"
    assert empty.text == ""
    assert bytes(blob.blob) == b"\x00\x01\xffPNG"
    assert blob.text is None
    assert upstream.gateway == gateway


@pytest.mark.parametrize(
    "sources",
    [
        {},
        {"text": "t", "blob": b"b"},
        {"text": "t", "gateway": "upstream"},
        {"blob": b"b", "gateway": "upstream"},
        {"text": "", "blob": b""},
    ],
    ids=str,
)
def test_resource_needs_exactly_one_source(gateway, sources):
    """No source, or two of them, is refused with one message naming the three kinds."""
    error = rejected(Resource, uri="file:///x", name="x", **sources)
    assert list(error.errors) == ["__all__"]
    assert "exactly one source" in error.message


@pytest.mark.parametrize(
    "uri", ["file:///notes.txt", "https://example.com/a?b=c#d", "urn:isbn:0451450523", "db+pg://h/t", "x:y"]
)
def test_resource_uri_accepts_absolute_uris(uri):
    """Any absolute URI (a scheme and a colon, no whitespace) names a resource."""
    assert create(Resource, uri=uri, name="r", text="t").uri == uri


@pytest.mark.parametrize("uri", ["/notes.txt", "notes.txt", "1http://x", "file:///with space", "file:///tab\t", ""])
def test_resource_uri_rejects_relative_or_malformed_uris(uri):
    """Relative references, schemes not starting with a letter and whitespace are refused on uri."""
    error = rejected(Resource, uri=uri, name="r", text="t")
    assert list(error.errors) == ["uri"]


def test_resource_uri_must_be_unique():
    """A second resource with the same URI is a Conflict."""
    ResourceFactory(uri="file:///same")
    with pytest.raises(Conflict):
        create(Resource, uri="file:///same", name="again", text="t")


@pytest.mark.parametrize(
    "template",
    [
        "file:///logs/{date}.txt",
        "http://x/{+path}/{?q,lang}",
        "https://api.example.com/users/{id}{?fields*}",
        "https://h/{#section}",
        "file:///{dir}/{name:3}{.ext}",
        "https://h/{;params*}{&more}",
        "db://h/{table}/%20{row}",
    ],
)
def test_resource_template_accepts_rfc6570_templates(template):
    """RFC 6570 templates with simple and operator expressions, prefixes and explode modifiers are valid."""
    assert create(ResourceTemplate, uri_template=template, name="t").uri_template == template


@pytest.mark.parametrize(
    "template",
    [
        "file:///logs/today.txt",
        "file:///logs/{date.txt",
        "file:///logs/date}.txt",
        "file:///logs/{{date}}.txt",
        "file:///{a b}",
        "file:///{}",
        "file:///{a:0}",
        "file:///{a,}",
        "file:///{date}\n",
        "{date}",
        "/logs/{date}",
    ],
)
def test_resource_template_rejects_non_rfc6570_or_relative_templates(template):
    """No expression, unbalanced or nested braces, spaces, empty expressions or a relative URI are refused."""
    error = rejected(ResourceTemplate, uri_template=template, name="t")
    assert list(error.errors) == ["uri_template"]


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------


def test_local_prompt_needs_a_template():
    """A prompt without a gateway and without a template is refused on template."""
    error = rejected(Prompt, name="p", arguments=[])
    assert list(error.errors) == ["template"]


def test_upstream_prompt_must_not_have_a_template(gateway):
    """Upstream prompts are rendered upstream: a template is refused, none is fine."""
    error = rejected(Prompt, name="p", gateway="upstream", template="Hi {{ x }}")
    assert list(error.errors) == ["template"]
    assert create(Prompt, name="p", gateway="upstream").template == ""


@pytest.mark.parametrize(
    ("template", "line"),
    [
        ("Hello {{ name ", 1),
        ("line one\nline two\n{% if topic %}\nno end", 3),
        ("ok\n{{ a | }}", 2),
        ("{% for x in %}{% endfor %}", 1),
        ("a\nb\nc\n{% endif %}", 4),
    ],
)
def test_prompt_template_syntax_errors_name_the_line(template, line):
    """A Jinja2 syntax error is refused on template with 'Template error on line N'."""
    error = rejected(Prompt, name="p", template=template)
    assert list(error.errors) == ["template"]
    assert error.errors["template"][0].startswith(f"Template error on line {line}:")


def test_prompt_name_follows_the_tool_name_rules():
    """Prompt names are 1-128 of [A-Za-z0-9_.-], like tool names."""
    assert create(Prompt, name="summarise.v2-x_y", template="x").name == "summarise.v2-x_y"
    error = rejected(Prompt, name="summarise text", template="x")
    assert list(error.errors) == ["name"]


def test_prompt_arguments_accept_name_title_description_required():
    """Arguments are objects with a name and optional title, description and boolean required."""
    arguments = [
        {"name": "topic", "title": "Topic", "description": "What to write about", "required": True},
        {"name": "tone", "required": False},
        {"name": "length"},
    ]
    prompt = create(Prompt, name="p", template="{{ topic }} {{ tone }} {{ length }}", arguments=arguments)
    prompt.refresh_from_db()
    assert prompt.arguments == arguments


@pytest.mark.parametrize(
    "arguments",
    [
        {"name": "topic"},
        ["topic"],
        [{}],
        [{"name": ""}],
        [{"name": 5}],
        [{"name": "topic", "type": "string"}],
        [{"name": "topic", "required": "yes"}],
        [{"name": "topic", "required": 1}],
        [{"name": "topic"}, {"name": "topic"}],
        [{"name": "topic", "description": 5}],
        [{"name": "topic", "title": ["T"]}],
        [{"name": "topic", "description": None}],
    ],
    ids=str,
)
def test_prompt_arguments_reject_malformed_lists(arguments):
    """Not a list, missing or empty names, unknown keys, non-boolean required, duplicates, non-string texts."""
    error = rejected(Prompt, name="p", template="{{ topic }}", arguments=arguments)
    assert list(error.errors) == ["arguments"]


def test_render_fills_the_arguments():
    """Declared arguments become template variables."""
    declared = [{"name": "topic", "required": True}, {"name": "tone"}]
    text = prompts.render("Write about {{ topic }} in a {{ tone }} tone.\n", declared, {"topic": "owls", "tone": "dry"})
    assert text == "Write about owls in a dry tone.\n"


def test_render_leaves_missing_optional_arguments_empty():
    """An optional argument that is not given renders as an empty string."""
    declared = [{"name": "topic", "required": True}, {"name": "tone"}]
    assert prompts.render("{{ topic }}|{{ tone }}|", declared, {"topic": "owls"}) == "owls||"


def test_render_rejects_missing_required_arguments():
    """Missing required arguments are InvalidInput naming each of them."""
    declared = [{"name": "topic", "required": True}, {"name": "audience", "required": True}, {"name": "tone"}]
    with pytest.raises(InvalidInput, match=r"Missing required prompt argument\(s\): topic, audience\."):
        prompts.render("{{ topic }}", declared, {"tone": "dry"})


def test_render_rejects_unknown_arguments():
    """Arguments the prompt does not declare are InvalidInput listing what it takes."""
    declared = [{"name": "topic"}]
    with pytest.raises(InvalidInput) as info:
        prompts.render("{{ topic }}", declared, {"topic": "owls", "colour": "red"})
    assert info.value.message == "Unknown prompt argument(s): colour; this prompt takes: topic."


def test_render_rejects_variables_that_are_not_arguments():
    """A template using an undeclared variable cannot render (strict undefined), as InvalidInput."""
    with pytest.raises(InvalidInput, match="cannot be rendered"):
        prompts.render("{{ secret_setting }}", [], {})


def test_render_does_not_evaluate_template_syntax_inside_argument_values():
    """Argument values are data: template syntax in them is output literally."""
    declared = [{"name": "topic"}]
    assert prompts.render("<{{ topic }}>", declared, {"topic": "{{ 7 * 7 }}{% raw %}"}) == "<{{ 7 * 7 }}{% raw %}>"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ joiner.__init__.__globals__.os.popen('id').read() }}",
        "{{ topic.__class__.__base__ }}",
        "{{ topic.format.__globals__ }}",
        "{% set x = [] %}{{ x.append(1) }}",
        "{{ {}.update(a=1) }}",
        "{{ range(100001) | list | length }}",
    ],
)
def test_render_sandbox_refuses_unsafe_access(template):
    """Internals, globals, mutation and oversized ranges are refused as InvalidInput; nothing leaks."""
    with pytest.raises(InvalidInput, match="cannot be rendered") as info:
        prompts.render(template, [{"name": "topic"}], {"topic": "x"})
    assert "<class" not in info.value.message
    assert "__builtins__" not in info.value.message


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ 'a' * 10**9 }}", "cannot be rendered"),
        ("{{ [0] * 200000 }}", "cannot be rendered"),
        ("{{ 2 ** 1000 }}", "cannot be rendered"),
        ("{{ 1 / 0 }}", "failed while rendering: ZeroDivisionError"),
        ("{{ 'a' + 1 }}", "failed while rendering: TypeError"),
        ("{% for i in range(100000) %}{{ 'x' * 50 }}{% endfor %}", "longer than"),
    ],
)
def test_render_bounds_the_work_a_template_can_do(template, message):
    """Huge repetitions, powers and outputs, and arithmetic errors, are InvalidInput, never a hang or a 500."""
    with pytest.raises(InvalidInput, match=message):
        prompts.render(template, [], {})


def test_render_sandbox_allows_safe_string_methods():
    """Ordinary filters and string methods still work inside the sandbox."""
    declared = [{"name": "topic"}]
    assert prompts.render("{{ topic.upper() }} {{ topic | title }}", declared, {"topic": "owl"}) == "OWL Owl"


# ---------------------------------------------------------------------------------------------
# Virtual servers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "icon",
    ["", "https://example.com/icon.png", "http://127.0.0.1/i.svg", "data:image/png;base64,iVBORw0KGgo="],
)
def test_server_icon_accepts_http_https_and_data_urls(icon):
    """An icon is optional; when given it is an http(s): or data: URL."""
    assert create(VirtualServer, name="s", icon=icon).icon == icon


@pytest.mark.parametrize(
    "icon", ["ftp://example.com/i.png", "javascript:alert(1)", "/static/icon.png", "icon.png", "https://", "file:///i"]
)
def test_server_icon_rejects_other_urls(icon):
    """Other schemes, relative paths and host-less URLs are refused on icon."""
    error = rejected(VirtualServer, name="s", icon=icon)
    assert error.errors == {"icon": ["The icon must be an http(s): or data: URL."]}


def test_server_members_are_named_by_natural_keys(gateway):
    """Tools, resources, templates and prompts join a server by name or URI; unknown ones are refused."""
    ToolFactory(name="search", gateway=gateway)
    ResourceFactory(uri="file:///readme")
    PromptFactory(name="summarise")
    server = create(VirtualServer, name="s", tools=["search"], resources=["file:///readme"], prompts=["summarise"])
    assert [t.name for t in server.tools.all()] == ["search"]
    assert [r.uri for r in server.resources.all()] == ["file:///readme"]
    assert [p.name for p in server.prompts.all()] == ["summarise"]
    error = rejected(VirtualServer, name="t", tools=["search", "missing"])
    assert error.errors == {"tools": ["Unknown: missing"]}


# ---------------------------------------------------------------------------------------------
# Failed updates change nothing
# ---------------------------------------------------------------------------------------------


def test_failed_tool_update_leaves_the_row_unchanged(gateway):
    """An update with one invalid field stores none of the fields and does not bump the version."""
    tool = ToolFactory(name="search", description="before", gateway=gateway, tags=["a"])
    version = events.catalog_version()
    with pytest.raises(InvalidInput):
        services.entry_update(tool, data={"description": "after", "tags": ["b"], "input_schema": {"type": "string"}})
    tool.refresh_from_db()
    assert (tool.description, tool.tags, tool.input_schema["type"]) == ("before", ["a"], "object")
    assert events.catalog_version() == version


def test_failed_gateway_update_keeps_url_and_credentials():
    """A refused gateway update keeps the stored URL and credentials."""
    gateway = bearer_gateway("remote", "keep-me")
    with pytest.raises(InvalidInput):
        services.entry_update(gateway, data={"url": "ws://wrong/scheme", "credentials": {"token": "new"}})
    gateway = Gateway.objects.get(pk=gateway.pk)
    assert gateway.url == "https://h/mcp"
    assert gateway.get_credentials() == {"token": "keep-me"}


def test_update_to_a_taken_name_is_a_conflict_and_changes_nothing(gateway):
    """Renaming onto another entry's name is a Conflict; the row keeps its name."""
    ToolFactory(name="one", gateway=gateway)
    two = ToolFactory(name="two", gateway=gateway)
    with pytest.raises(Conflict):
        services.entry_update(two, data={"name": "one"})
    two.refresh_from_db()
    assert two.name == "two"


def test_failed_server_update_keeps_its_members(gateway):
    """A server update with an unknown member keeps the current members."""
    ToolFactory(name="search", gateway=gateway)
    server = create(VirtualServer, name="s", title="before", tools=["search"])
    with pytest.raises(InvalidInput):
        services.entry_update(server, data={"title": "after", "tools": ["missing"]})
    server.refresh_from_db()
    assert server.title == "before"
    assert [t.name for t in server.tools.all()] == ["search"]


def test_failed_resource_update_keeps_its_content():
    """Adding a second source to a resource is refused and the stored text stays."""
    resource = ResourceFactory(uri="file:///a", text="keep")
    with pytest.raises(InvalidInput):
        services.entry_update(resource, data={"blob": b"\x00"})
    resource.refresh_from_db()
    assert (resource.text, resource.blob) == ("keep", None)
