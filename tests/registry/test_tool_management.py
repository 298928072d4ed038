"""Wrapped tools (REST, CLI, Python function) managed everywhere but the admin: the REST API with
write-only credentials and a validate endpoint, secret rotation, export/import, and the tool_add,
tool_update and tool_validate commands (docs/tool-backends.md: the definitions used here are valid
under its contract, so these tests hold whatever the kinds' rules add)."""

import copy
import io
import json
import re

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import override_settings

from registry import events, exchange, services, tool_kinds
from registry.choices import IntegrationType
from registry.exceptions import InvalidInput
from registry.models import Tool, VirtualServer

pytestmark = pytest.mark.django_db

TOKEN = "weather-token-9f3a77"
CITY_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
REST = {
    "name": "weather",
    "description": "Today's weather.",
    "integration_type": "rest",
    "input_schema": CITY_SCHEMA,
    "backend_config": {
        "url": "https://api.example.com/v1/weather{?city}",
        "method": "GET",
        "headers": {"Accept": "application/json"},
        "auth": {"type": "bearer"},
    },
    "credentials": {"token": TOKEN},
}
OPEN_REST = {
    "name": "status",
    "integration_type": "rest",
    "backend_config": {"url": "https://status.example.com/v1/summary", "method": "GET"},
}
CLI = {
    "name": "grep",
    "integration_type": "cli",
    "input_schema": {
        "type": "object",
        "properties": {"pattern": {"type": "string"}, "files": {"type": "array", "items": {"type": "string"}}},
        "required": ["pattern", "files"],
    },
    "backend_config": {"command": "grep", "args": ["-n", "--", "{pattern}", "{files*}"], "output": "text"},
}
FUNCTION = {
    "name": "add",
    "integration_type": "function",
    "backend_config": {"function": "tests.fixtures.functions.add"},
}
AUTH_SECRETS = {"basic": ("username", "password"), "bearer": ("token",), "api_key": ("key",)}


@pytest.fixture
def rest_needs_credentials(monkeypatch):
    """The REST rule of the contract that matters here: an authentication's secrets must be stored
    (the real rule, registry/tool_kinds/rest.py, does more; this keeps these tests independent of it)."""
    real = tool_kinds._CLEANERS[IntegrationType.REST]

    def clean(tool):
        real(tool)
        auth = (tool.backend_config or {}).get("auth") or {}
        missing = [key for key in AUTH_SECRETS.get(auth.get("type"), ()) if key not in tool.get_credentials()]
        if missing:
            raise ValidationError({"credentials": f"Authentication {auth['type']!r} needs {', '.join(missing)}."})

    monkeypatch.setitem(tool_kinds._CLEANERS, IntegrationType.REST, clean)


def create(data):
    return services.entry_create(Tool, data=copy.deepcopy(data))


# ---------------------------------------------------------------------------------------------
# REST API: credentials are write-only
# ---------------------------------------------------------------------------------------------


def test_a_rest_tool_is_created_with_credentials_that_are_never_returned(staff_client):
    """POST stores the credentials encrypted; no answer ever contains them, only has_credentials."""
    response = staff_client.post_json("/api/tools", REST)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["has_credentials"] is True
    assert "credentials" not in body
    assert body["backend_config"]["auth"]["type"] == "bearer"
    for answer in (staff_client.get(f"/api/tools/{body['id']}"), staff_client.get("/api/tools")):
        assert TOKEN not in answer.content.decode()
    tool = Tool.objects.get(name="weather")
    assert TOKEN not in tool.credentials_encrypted
    assert tool.get_credentials() == {"token": TOKEN}


def test_credentials_are_kept_unless_replaced(staff_client):
    """PATCH and PUT without credentials keep them; with credentials they replace them."""
    pk = staff_client.post_json("/api/tools", REST).json()["id"]
    patched = staff_client.patch_json(f"/api/tools/{pk}", {"description": "Changed."})
    assert patched.status_code == 200, patched.content
    assert patched.json()["has_credentials"] is True
    replaced = {key: value for key, value in REST.items() if key != "credentials"} | {"title": "Weather"}
    assert staff_client.put_json(f"/api/tools/{pk}", replaced).status_code == 200
    assert Tool.objects.get(pk=pk).get_credentials() == {"token": TOKEN}

    assert staff_client.patch_json(f"/api/tools/{pk}", {"credentials": {"token": "new-token"}}).status_code == 200
    assert Tool.objects.get(pk=pk).get_credentials() == {"token": "new-token"}


def test_an_empty_credentials_object_clears_them(staff_client):
    """{} clears the stored credentials (here of a tool whose authentication needs none)."""
    pk = staff_client.post_json("/api/tools", OPEN_REST | {"credentials": {"token": "left-over"}}).json()["id"]
    response = staff_client.patch_json(f"/api/tools/{pk}", {"credentials": {}})
    assert response.status_code == 200, response.content
    assert response.json()["has_credentials"] is False
    assert Tool.objects.get(pk=pk).credentials_encrypted == ""


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({"token": 42}, "token"),
        ({"token": "two\nlines"}, "line breaks"),
        ({"secret": "x"}, "secret"),
    ],
)
def test_malformed_credentials_are_refused_and_nothing_is_stored(staff_client, credentials, message):
    """Credentials are text without line breaks, under the known keys; otherwise 422 and no tool."""
    response = staff_client.post_json("/api/tools", REST | {"credentials": credentials})
    assert response.status_code == 422, response.content
    assert message in response.content.decode()
    assert not Tool.objects.exists()


def test_only_rest_tools_hold_credentials(staff_client):
    """A CLI tool with credentials is refused on the credentials field."""
    response = staff_client.post_json("/api/tools", CLI | {"credentials": {"token": "x"}})
    assert response.status_code == 422
    assert response.json()["errors"] == {"credentials": ["Only REST tools hold credentials."]}


def test_missing_credentials_are_refused_on_the_credentials_field(staff_client, rest_needs_credentials):
    """A kind's rule about credentials reaches the API as a 422 on 'credentials'."""
    response = staff_client.post_json("/api/tools", {k: v for k, v in REST.items() if k != "credentials"})
    assert response.status_code == 422
    assert "credentials" in response.json()["errors"]


# ---------------------------------------------------------------------------------------------
# REST API: POST /api/tools/validate
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("definition", [REST, OPEN_REST, CLI, FUNCTION], ids=["rest", "open-rest", "cli", "function"])
def test_validate_accepts_a_valid_definition_and_stores_nothing(staff_client, definition):
    """200 {"valid": true}; no tool, no catalog change."""
    version = events.catalog_version()
    response = staff_client.post_json("/api/tools/validate", definition)
    assert response.status_code == 200, response.content
    assert response.json() == {"valid": True}
    assert not Tool.objects.exists()
    assert events.catalog_version() == version


def test_validate_reports_errors_by_field(staff_client):
    """422 with the errors by field, as creating the tool would."""
    response = staff_client.post_json("/api/tools/validate", CLI | {"input_schema": {"type": "string"}})
    assert response.status_code == 422
    assert "input_schema" in response.json()["errors"]
    assert not Tool.objects.exists()


def test_validate_reports_the_kinds_rules_on_backend_config(staff_client, monkeypatch):
    """What a kind's rule refuses comes back on backend_config, with the rule's message."""

    def refuse(tool):
        raise ValidationError({"backend_config": "url: 'ftp://x' must be http or https."})

    monkeypatch.setitem(tool_kinds._CLEANERS, IntegrationType.REST, refuse)
    response = staff_client.post_json("/api/tools/validate", OPEN_REST)
    assert response.status_code == 422
    assert response.json()["errors"] == {"backend_config": ["url: 'ftp://x' must be http or https."]}


def test_validate_needs_the_write_scope_and_a_free_name(staff_client, reader_client):
    """A reader gets 403; a name already taken is 409, as on create."""
    assert reader_client.post_json("/api/tools/validate", CLI).status_code == 403
    create(CLI)
    assert staff_client.post_json("/api/tools/validate", CLI).status_code == 409


# ---------------------------------------------------------------------------------------------
# Secret rotation
# ---------------------------------------------------------------------------------------------


def test_rotation_re_encrypts_tool_credentials_too():
    """rotate_secrets re-encrypts a REST tool's credentials with the newest key; old keys can go."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[old]):
        tool = create(REST)
        before = tool.credentials_encrypted
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[new, old]):
        out = io.StringIO()
        call_command("rotate_secrets", stdout=out)
        assert "1 gateway(s) and tool(s)" in out.getvalue()
    tool.refresh_from_db()
    assert tool.credentials_encrypted != before
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[new]):
        assert tool.get_credentials() == {"token": TOKEN}


# ---------------------------------------------------------------------------------------------
# Export and import
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def wrapped_tools(db):
    """A REST tool with credentials, a REST tool without, a CLI and a function tool, in a server."""
    tools = [create(definition) for definition in (REST, OPEN_REST, CLI, FUNCTION)]
    services.entry_create(VirtualServer, data={"name": "wrapped", "tools": [tool.name for tool in tools]})
    return tools


def _tools_of(document):
    return {tool["name"]: tool for tool in document["tools"]}


def test_backend_config_travels_in_the_export(wrapped_tools):
    """Each tool's kind and definition are in the export as stored; the secrets are not."""
    document = exchange.catalog_export()
    exported = _tools_of(document)
    for tool in wrapped_tools:
        assert exported[tool.name]["integration_type"] == tool.integration_type
        assert exported[tool.name]["backend_config"] == tool.backend_config
    assert TOKEN not in json.dumps(document)
    assert all("credentials_encrypted" not in item for item in document["tools"])


@pytest.mark.parametrize("passphrase", [None, "correct horse battery staple"], ids=["installation-keys", "passphrase"])
def test_export_wipe_import_with_secrets_restores_every_kind_and_its_credentials(wrapped_tools, passphrase):
    """With include_secrets the REST tool's credentials travel encrypted and come back; REST, CLI and
    function tools come back identical."""
    plain = exchange.catalog_export()["tools"]
    document = exchange.catalog_export(include_secrets=True, passphrase=passphrase)
    text = json.dumps(document)
    assert TOKEN not in text
    assert [item["name"] for item in document["tools"] if "credentials_encrypted" in item] == ["weather"]
    Tool.objects.all().delete()
    VirtualServer.objects.all().delete()

    report = exchange.catalog_import(document=json.loads(text), passphrase=passphrase)
    assert report.created["tools"] == ["add", "grep", "status", "weather"]
    assert Tool.objects.get(name="weather").get_credentials() == {"token": TOKEN}
    assert exchange.catalog_export()["tools"] == plain
    again = exchange.catalog_import(document=json.loads(text), passphrase=passphrase)
    assert again.unchanged["tools"] == ["add", "grep", "status", "weather"]


def test_a_changed_tool_secret_is_a_conflict_until_overwritten(wrapped_tools):
    """Identical tool credentials are unchanged; different ones are a conflict on 'credentials'."""
    document = exchange.catalog_export(include_secrets=True)
    services.entry_update(Tool.objects.get(name="weather"), data={"credentials": {"token": "rotated"}})
    report = exchange.catalog_import(document=document)
    assert report.conflicts == [{"kind": "tools", "key": "weather", "fields": ["credentials"]}]
    exchange.catalog_import(document=document, overwrite=True)
    assert Tool.objects.get(name="weather").get_credentials() == {"token": TOKEN}


def test_import_without_secrets_keeps_the_stored_credentials(wrapped_tools):
    """Importing a secret-less export into the catalog it came from changes nothing and keeps the token."""
    document = exchange.catalog_export()
    report = exchange.catalog_import(document=document, overwrite=True)
    assert report.unchanged["tools"] == ["add", "grep", "status", "weather"]
    assert Tool.objects.get(name="weather").get_credentials() == {"token": TOKEN}


def test_import_without_secrets_elsewhere_brings_every_kind_that_needs_none(wrapped_tools, rest_needs_credentials):
    """Into an empty catalog: tools that need no secrets import; a tool whose authentication needs them
    is refused (all or nothing) with a message saying to export with include_secrets."""
    document = exchange.catalog_export()
    Tool.objects.all().delete()
    VirtualServer.objects.all().delete()
    with pytest.raises(InvalidInput) as refused:
        exchange.catalog_import(document=copy.deepcopy(document))
    assert "include_secrets" in refused.value.message
    assert "weather" in refused.value.message
    assert not Tool.objects.exists()

    document["tools"] = [tool for tool in document["tools"] if tool["name"] != "weather"]
    for server in document["servers"]:
        server["tools"] = [name for name in server["tools"] if name != "weather"]
    report = exchange.catalog_import(document=document)
    assert report.created["tools"] == ["add", "grep", "status"]


def test_import_with_secrets_over_http_keeps_tool_credentials_write_only(staff_client, wrapped_tools):
    """/api/export?include_secrets=true carries the tool's credentials encrypted; /api/import restores them."""
    document = staff_client.get("/api/export?include_secrets=true").json()
    assert TOKEN not in json.dumps(document)
    Tool.objects.all().delete()
    VirtualServer.objects.all().delete()
    response = staff_client.post_json("/api/import", document)
    assert response.status_code == 200, response.content
    assert Tool.objects.get(name="weather").get_credentials() == {"token": TOKEN}


# ---------------------------------------------------------------------------------------------
# Commands: tool_add, tool_update, tool_validate
# ---------------------------------------------------------------------------------------------


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _options(definition, tmp_path):
    """tool_add's options for a definition: the JSON inline, the credentials from a file."""
    args = ["--kind", definition["integration_type"], "--config", json.dumps(definition["backend_config"])]
    if "input_schema" in definition:
        args += ["--input-schema", json.dumps(definition["input_schema"])]
    if "credentials" in definition:
        secrets = tmp_path / "credentials.json"
        secrets.write_text(json.dumps(definition["credentials"]))
        args += ["--credentials", f"@{secrets}"]
    return args


@pytest.mark.parametrize("definition", [REST, CLI, FUNCTION], ids=["rest", "cli", "function"])
def test_tool_add_stores_each_kind(definition, tmp_path):
    """tool_add NAME --kind K --config JSON stores the tool; a REST tool's credentials come from @file."""
    out = run("tool_add", definition["name"], *_options(definition, tmp_path), "--description", "Added.")
    assert f"'{definition['name']}'" in out
    tool = Tool.objects.get(name=definition["name"])
    assert tool.integration_type == definition["integration_type"]
    assert tool.description == "Added."
    assert tool.get_credentials() == definition.get("credentials", {})
    if definition is REST:
        assert "with credentials" in out
        assert TOKEN not in out


def test_tool_add_reads_the_config_from_a_file_and_joins_a_server(tmp_path):
    """--config @FILE and --server NAME: the tool is stored and in the server, as one catalog change."""
    services.entry_create(VirtualServer, data={"name": "ops"})
    config = tmp_path / "grep.json"
    config.write_text(json.dumps(CLI["backend_config"]))
    version = events.catalog_version()
    schema = json.dumps(CLI["input_schema"])
    out = run(
        "tool_add", "grep", "--kind", "cli", "--config", f"@{config}", "--input-schema", schema, "--server", "ops"
    )
    assert "in virtual server 'ops'" in out
    assert list(VirtualServer.objects.get(name="ops").tools.values_list("name", flat=True)) == ["grep"]
    assert events.catalog_version() == version + 1


GREP = ["--kind", "cli", "--config", json.dumps(CLI["backend_config"])]
GREP_SCHEMA = ["--input-schema", json.dumps(CLI["input_schema"])]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "cli", "--config", "{not json"], "--config is not JSON"),
        (["--kind", "cli", "--config", "[1, 2]"], "--config must be a JSON object"),
        (["--kind", "cli", "--config", "@/nonexistent/grep.json"], "cannot read /nonexistent/grep.json"),
        ([*GREP, "--input-schema", '{"type": "string"}'], "input_schema"),
        ([*GREP, *GREP_SCHEMA, "--credentials", '{"token": "x"}'], "Only REST tools hold credentials"),
        ([*GREP, *GREP_SCHEMA, "--server", "nowhere"], "No virtual server named 'nowhere'"),
    ],
)
def test_tool_add_refuses_bad_input_and_stores_nothing(args, message):
    """Bad JSON, a bad definition or an unknown server: a CommandError with the reason; no tool, no change."""
    version = events.catalog_version()
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("tool_add", "bad", *args)
    assert not Tool.objects.exists()
    assert events.catalog_version() == version


def test_tool_add_refuses_a_taken_name():
    create(CLI)
    with pytest.raises(CommandError, match="already exists"):
        call_command("tool_add", "grep", *GREP, *GREP_SCHEMA)


def test_tool_update_changes_only_what_is_given(tmp_path):
    """tool_update replaces the definition and keeps the rest, credentials included."""
    create(REST)
    config = REST["backend_config"] | {"headers": {"Accept": "application/json", "X-Team": "ops"}}
    out = run("tool_update", "weather", "--config", json.dumps(config), "--timeout", "5")
    assert "backend_config" in out
    tool = Tool.objects.get(name="weather")
    assert tool.backend_config["headers"]["X-Team"] == "ops"
    assert tool.timeout == 5
    assert tool.description == REST["description"]
    assert tool.get_credentials() == {"token": TOKEN}


def test_tool_update_with_bad_input_changes_nothing():
    """An invalid update and an unknown tool are CommandErrors; the stored tool is as it was."""
    create(CLI)
    before = Tool.objects.get(name="grep").backend_config
    with pytest.raises(CommandError, match="input_schema"):
        call_command("tool_update", "grep", "--input-schema", '{"type": "string"}', "--description", "x")
    assert Tool.objects.get(name="grep").backend_config == before
    assert Tool.objects.get(name="grep").description == ""
    with pytest.raises(CommandError, match="No tool named 'nope'"):
        call_command("tool_update", "nope", "--description", "x")
    with pytest.raises(CommandError, match="Nothing to change"):
        call_command("tool_update", "grep")


def test_tool_validate_checks_and_stores_nothing(tmp_path):
    """tool_validate says valid and prints the definition as it would be stored; nothing is stored."""
    version = events.catalog_version()
    out = run("tool_validate", "weather", *_options(REST, tmp_path))
    assert out.startswith("Valid: REST API tool 'weather' with credentials; nothing was stored.")
    assert json.loads(out.split("\n", 1)[1])["backend_config"]["url"] == REST["backend_config"]["url"]
    assert not Tool.objects.exists()
    assert events.catalog_version() == version
    with pytest.raises(CommandError, match="--input-schema must be a JSON object"):
        call_command("tool_validate", "grep", *GREP, "--input-schema", "[]")
    with pytest.raises(CommandError, match="input_schema"):
        call_command("tool_validate", "grep", *GREP, "--input-schema", '{"type": "string"}')
    assert not Tool.objects.exists()
