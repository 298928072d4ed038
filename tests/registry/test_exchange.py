"""Catalog export and import: services, HTTP endpoints and management commands.

The acceptance requirement: export, wipe the database, import, and the catalog comes back identical.
"""

import copy
import io
import json

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.test import override_settings

from registry import events, exchange, services
from registry.exceptions import InvalidInput
from registry.models import Gateway, Prompt, Resource, ResourceTemplate, Tool, VirtualServer
from registry.representation import KINDS

pytestmark = pytest.mark.django_db

MODELS = (VirtualServer, Prompt, ResourceTemplate, Resource, Tool, Gateway)
BEARER_SECRET = "bearer-secret-7c1f9a"
BASIC_SECRET = "basic-password-e42d"
PNG_WITH_NUL = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\xff"
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUXyZ\n-----END CERTIFICATE-----\n"


def build_catalog() -> None:
    """A catalog with every kind of entry and every kind of value the export has to carry."""
    create = services.entry_create
    create(
        Gateway,
        data={
            "name": "http-up",
            "description": "Streamable HTTP upstream with a bearer token",
            "era": "modern",
            "url": "https://mcp.example.com/mcp",
            "auth_type": "bearer",
            "credentials": {"token": BEARER_SECRET},
            "ca_bundle": PEM_CERT,
        },
    )
    create(
        Gateway,
        data={
            "name": "sse-up",
            "transport": "sse",
            "url": "http://127.0.0.1:9/sse",
            "auth_type": "basic",
            "credentials": {"username": "svc", "password": BASIC_SECRET},
            "verify_tls": False,
        },
    )
    create(
        Gateway, data={"name": "ws-up", "transport": "websocket", "url": "wss://ws.example.com/ws", "enabled": False}
    )
    create(
        Gateway,
        data={
            "name": "stdio-up",
            "transport": "stdio",
            "era": "legacy",
            "command": "python",
            "args": ["-m", "mcp_server_time", "--local-timezone=UTC"],
            "env": {"LOG_LEVEL": "debug", "TZ": "UTC"},
            "cwd": "/srv/mcp",
        },
    )
    create(
        Tool,
        data={
            "name": "weather.get",
            "title": "Weather",
            "description": "Current weather ✓",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "output_schema": {"type": "object", "properties": {"temp": {"type": "number"}}},
            "annotations": {"readOnlyHint": True, "title": "Weather", "x-vendor": {"n": 1}},
            "tags": ["weather", "api", "weather"],
            "timeout": 12.5,
            "gateway": "http-up",
            "original_name": "get_weather",
        },
    )
    create(Tool, data={"name": "stdio.echo", "gateway": "stdio-up"})
    create(
        Tool,
        data={
            "name": "rest-lookup",
            "integration_type": "rest",
            "backend_config": {"url": "https://api.example.com/lookup", "method": "GET"},
            "enabled": False,
        },
    )
    create(Resource, data={"uri": "file:///notes.txt", "name": "notes", "mime_type": "text/plain", "text": "Hi\nÜ ✓"})
    create(Resource, data={"uri": "file:///empty.txt", "name": "empty", "text": ""})
    create(
        Resource,
        data={
            "uri": "file:///logo.png",
            "name": "logo",
            "mime_type": "image/png",
            "blob": PNG_WITH_NUL,
            "annotations": {"audience": ["user"], "priority": 0.5},
        },
    )
    create(
        Resource,
        data={"uri": "https://mcp.example.com/r/1", "name": "remote", "gateway": "http-up", "original_uri": "r://1"},
    )
    create(
        ResourceTemplate, data={"uri_template": "file:///logs/{date}.txt", "name": "logs", "mime_type": "text/plain"}
    )
    create(ResourceTemplate, data={"uri_template": "http://x/{+path}/{?q,lang}", "name": "x", "gateway": "sse-up"})
    create(
        Prompt,
        data={
            "name": "summarise",
            "title": "Summarise",
            "arguments": [
                {"name": "text", "description": "What to summarise", "required": True},
                {"name": "tone", "title": "Tone", "required": False},
                {"name": "length"},
            ],
            "template": "Summarise in a {{ tone }} tone:\n{{ text }}\n",
        },
    )
    create(Prompt, data={"name": "upstream.prompt", "gateway": "stdio-up", "original_name": "orig"})
    create(
        VirtualServer,
        data={
            "name": "main",
            "title": "Main",
            "icon": "data:image/png;base64,iVBORw0KGgo=",
            "tools": ["weather.get", "rest-lookup"],
            "resources": ["file:///notes.txt", "file:///logo.png"],
            "resource_templates": ["file:///logs/{date}.txt"],
            "prompts": ["summarise"],
        },
    )
    create(VirtualServer, data={"name": "empty", "enabled": False})


def wipe() -> None:
    """Delete every catalog entry of every model."""
    for model in MODELS:
        model.objects.all().delete()
    assert not any(model.objects.exists() for model in MODELS)


def without_timestamp(document: dict) -> dict:
    return {key: value for key, value in document.items() if key != "exported_at"}


def counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in MODELS}


@pytest.fixture
def catalog():
    build_catalog()
    return exchange.catalog_export()


# ---------------------------------------------------------------------------------------------
# Round trip through the services
# ---------------------------------------------------------------------------------------------


def test_export_has_every_kind_sorted_by_natural_key(catalog):
    """The document names its format and version and lists each kind by natural key, without database ids."""
    assert catalog["format"] == "mcp-gateway-catalog"
    assert catalog["version"] == 1
    assert "exported_at" in catalog
    assert [g["name"] for g in catalog["gateways"]] == ["http-up", "sse-up", "stdio-up", "ws-up"]
    assert [t["name"] for t in catalog["tools"]] == ["rest-lookup", "stdio.echo", "weather.get"]
    assert [r["uri"] for r in catalog["resources"]] == sorted(r["uri"] for r in catalog["resources"])
    assert [s["name"] for s in catalog["servers"]] == ["empty", "main"]
    assert all("id" not in item for kind in KINDS for item in catalog[kind.key])
    main = catalog["servers"][1]
    assert main["tools"] == ["rest-lookup", "weather.get"]
    assert main["resources"] == ["file:///logo.png", "file:///notes.txt"]
    weather = catalog["tools"][2]
    assert weather["gateway"] == "http-up"
    assert weather["tags"] == ["api", "weather"]


def test_export_is_plain_json(catalog):
    """The document survives json.dumps/json.loads unchanged; binary content travels as base64."""
    assert json.loads(json.dumps(catalog)) == catalog
    logo = next(r for r in catalog["resources"] if r["uri"] == "file:///logo.png")
    assert logo["text"] is None
    assert logo["blob"] == "iVBORw0KGgoAAAANSUhEUgD/"


def test_export_wipe_import_gives_back_an_identical_catalog(catalog):
    """Export, wipe the database, import: exporting again gives the same document apart from exported_at."""
    before = counts()
    wipe()
    report = exchange.catalog_import(document=json.loads(json.dumps(catalog)))
    assert report.conflicts == []
    assert report.updated == {}
    assert report.created == {
        "gateways": ["http-up", "sse-up", "stdio-up", "ws-up"],
        "tools": ["rest-lookup", "stdio.echo", "weather.get"],
        "resources": ["file:///empty.txt", "file:///logo.png", "file:///notes.txt", "https://mcp.example.com/r/1"],
        "resource_templates": ["file:///logs/{date}.txt", "http://x/{+path}/{?q,lang}"],
        "prompts": ["summarise", "upstream.prompt"],
        "servers": ["empty", "main"],
    }
    assert counts() == before
    assert without_timestamp(exchange.catalog_export()) == without_timestamp(catalog)
    assert bytes(Resource.objects.get(uri="file:///logo.png").blob) == PNG_WITH_NUL
    assert Resource.objects.get(uri="file:///empty.txt").text == ""


def test_the_era_setting_travels_and_defaults_to_auto(catalog):
    """A gateway's `era` is part of its export; a document from before the setting existed imports as auto.
    What federation detected (`detected_era`) is not exported: it is learned again on connecting."""
    eras = {g["name"]: g["era"] for g in catalog["gateways"]}
    assert eras == {"http-up": "modern", "sse-up": "auto", "stdio-up": "legacy", "ws-up": "auto"}
    assert all("detected_era" not in g for g in catalog["gateways"])
    older = copy.deepcopy(catalog)
    for gateway in older["gateways"]:
        del gateway["era"]
    wipe()
    exchange.catalog_import(document=older)
    assert set(Gateway.objects.values_list("era", flat=True)) == {"auto"}


def test_import_without_secrets_keeps_the_auth_type_but_no_credentials(catalog):
    """Credentials are not in a default export: after a round trip the kind of auth is kept, the values are not."""
    text = json.dumps(catalog)
    assert BEARER_SECRET not in text
    assert BASIC_SECRET not in text
    assert "secrets" not in catalog
    assert all("credentials_encrypted" not in g for g in catalog["gateways"])
    wipe()
    exchange.catalog_import(document=catalog)
    gateway = Gateway.objects.get(name="http-up")
    assert gateway.auth_type == "bearer"
    assert gateway.get_credentials() == {}


def test_importing_twice_reports_everything_unchanged_and_changes_nothing(catalog):
    """A second import of the same document creates and updates nothing and does not bump the version."""
    wipe()
    exchange.catalog_import(document=catalog)
    stamps = {model: dict(model.objects.values_list("pk", "updated_at")) for model in MODELS}
    version = events.catalog_version()

    report = exchange.catalog_import(document=catalog)

    assert report.created == {}
    assert report.updated == {}
    assert report.conflicts == []
    assert {kind: len(keys) for kind, keys in report.unchanged.items()} == {
        "gateways": 4,
        "tools": 3,
        "resources": 4,
        "resource_templates": 2,
        "prompts": 2,
        "servers": 2,
    }
    assert events.catalog_version() == version
    assert {model: dict(model.objects.values_list("pk", "updated_at")) for model in MODELS} == stamps


def test_importing_into_the_catalog_it_came_from_is_a_no_op(catalog):
    """Importing an export into the same, unchanged catalog reports every entry unchanged."""
    report = exchange.catalog_import(document=catalog)
    assert report.created == report.updated == {}
    assert report.conflicts == []
    assert sum(len(keys) for keys in report.unchanged.values()) == 17


def test_changed_entry_is_a_conflict_and_kept_unless_overwrite(catalog):
    """An entry that differs is reported with the differing fields and kept; overwrite=True replaces it."""
    tool = Tool.objects.get(name="weather.get")
    services.entry_update(tool, data={"description": "changed locally", "tags": ["local"]})
    server = VirtualServer.objects.get(name="main")
    services.entry_update(server, data={"tools": ["stdio.echo"]})

    report = exchange.catalog_import(document=catalog)
    assert report.conflicts == [
        {"kind": "tools", "key": "weather.get", "fields": ["description", "tags"]},
        {"kind": "servers", "key": "main", "fields": ["tools"]},
    ]
    assert report.updated == {}
    assert Tool.objects.get(name="weather.get").description == "changed locally"
    assert [t.name for t in VirtualServer.objects.get(name="main").tools.all()] == ["stdio.echo"]

    report = exchange.catalog_import(document=catalog, overwrite=True)
    assert report.conflicts == []
    assert report.updated == {"tools": ["weather.get"], "servers": ["main"]}
    assert without_timestamp(exchange.catalog_export()) == without_timestamp(catalog)


def test_import_creates_missing_entries_next_to_existing_ones(catalog):
    """Entries that exist only locally stay; entries only in the document are created."""
    Tool.objects.filter(name="stdio.echo").delete()
    services.entry_create(
        Tool,
        data={
            "name": "local-only",
            "integration_type": "function",
            "backend_config": {"function": "tests.fixtures.functions.add"},
        },
    )
    report = exchange.catalog_import(document=catalog)
    assert report.created == {"tools": ["stdio.echo"]}
    assert Tool.objects.filter(name__in=["local-only", "stdio.echo"]).count() == 2


def test_dry_run_reports_but_stores_nothing(catalog):
    """dry_run=True gives the full report and leaves the database and the version as they were."""
    wipe()
    version = events.catalog_version()
    report = exchange.catalog_import(document=catalog, dry_run=True)
    assert report.dry_run is True
    assert report.as_dict()["dry_run"] is True
    assert sum(len(keys) for keys in report.created.values()) == 17
    assert counts() == dict.fromkeys(counts(), 0)
    assert events.catalog_version() == version


def test_dry_run_with_overwrite_reports_updates_but_keeps_local_changes(catalog):
    """A dry run with overwrite says what would be replaced and replaces nothing."""
    services.entry_update(Tool.objects.get(name="weather.get"), data={"description": "local"})
    report = exchange.catalog_import(document=catalog, dry_run=True, overwrite=True)
    assert report.updated == {"tools": ["weather.get"]}
    assert Tool.objects.get(name="weather.get").description == "local"


@pytest.mark.parametrize(
    ("kind", "bad", "message"),
    [
        ("tools", {"name": "zz-last", "integration_type": "function", "input_schema": {"type": "string"}}, "tools[3]"),
        ("tools", {"name": "bad name", "integration_type": "function"}, "tools[3]"),
        ("resources", {"uri": "relative/path", "name": "x", "text": "t"}, "resources[4]"),
        ("prompts", {"name": "broken", "template": "{% if x %}"}, "prompts[2]"),
        ("servers", {"name": "zz", "tools": ["no-such-tool"]}, "servers[2]"),
        ("gateways", {"name": "zz", "transport": "stdio"}, "gateways[4]"),
    ],
)
def test_invalid_entry_anywhere_rejects_the_whole_import(catalog, kind, bad, message):
    """One invalid entry, even the last one, rejects the document and nothing at all is stored."""
    wipe()
    document = copy.deepcopy(catalog)
    document[kind].append(bad)
    version = events.catalog_version()
    with pytest.raises(InvalidInput) as info:
        exchange.catalog_import(document=document)
    assert info.value.message.startswith(message)
    assert counts() == dict.fromkeys(counts(), 0)
    assert events.catalog_version() == version


def test_invalid_entry_with_overwrite_leaves_existing_entries_unchanged(catalog):
    """A rejected import with overwrite=True does not replace entries it had already processed."""
    services.entry_update(Tool.objects.get(name="weather.get"), data={"description": "local"})
    document = copy.deepcopy(catalog)
    document["servers"].append({"name": "zz", "prompts": ["missing"]})
    with pytest.raises(InvalidInput):
        exchange.catalog_import(document=document, overwrite=True)
    assert Tool.objects.get(name="weather.get").description == "local"


@pytest.mark.django_db(transaction=True)
def test_all_or_nothing_holds_with_real_commits():
    """Outside a test transaction too: a rejected or dry-run import commits nothing; a real one bumps once."""
    build_catalog()
    document = exchange.catalog_export()
    wipe()
    broken = copy.deepcopy(document)
    broken["prompts"].append({"name": "zz", "template": "{{"})
    version = events.catalog_version()

    with pytest.raises(InvalidInput):
        exchange.catalog_import(document=broken)
    exchange.catalog_import(document=document, dry_run=True)
    assert counts() == dict.fromkeys(counts(), 0)
    assert events.catalog_version() == version

    exchange.catalog_import(document=document)
    assert without_timestamp(exchange.catalog_export()) == without_timestamp(document)
    assert events.catalog_version() == version + 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d.update(format="something-else"),
            'Not a catalog export: the document must be a JSON object with "format"',
        ),
        (lambda d: d.pop("format"), "Not a catalog export"),
        (lambda d: d.update(version=2), "Unsupported export version 2; this gateway reads version 1."),
        (lambda d: d.update(version="1"), "Unsupported export version '1'"),
        (lambda d: d.update(colour="red", extra=1), "Unknown top-level key(s) in the export: colour, extra."),
        (lambda d: d.update(tools={"name": "x"}), "'tools' must be a list."),
        (lambda d: d["tools"].append("weather.get"), "tools[3] must be a JSON object."),
        (lambda d: d["tools"][0].update(colour="red"), "tools[0]: unknown field(s) colour."),
        (lambda d: d["tools"][0].pop("name"), "tools[0]: 'name' is required."),
        (lambda d: d["resources"][0].update(blob="***not base64***", text=None), "resources[0] ('file:///empty.txt')"),
        (lambda d: d["tools"][0].update(timeout="soon"), "tools[0] ('rest-lookup')"),
        (lambda d: d["gateways"][0].update(credentials_encrypted="x"), "gateways[0]: credentials_encrypted given"),
    ],
)
def test_malformed_documents_are_rejected_with_a_clear_message(catalog, mutate, message):
    """Wrong format or version, unknown keys and malformed items are refused before anything is stored."""
    wipe()
    document = copy.deepcopy(catalog)
    mutate(document)
    with pytest.raises(InvalidInput) as info:
        exchange.catalog_import(document=document)
    assert message in info.value.message
    assert counts() == dict.fromkeys(counts(), 0)


@pytest.mark.parametrize("document", [None, [], "catalog", 1])
def test_non_object_documents_are_rejected(document):
    """Anything but a JSON object is not a catalog export."""
    with pytest.raises(InvalidInput, match="Not a catalog export"):
        exchange.catalog_import(document=document)


def test_minimal_document_with_missing_kinds_imports():
    """Kinds left out of a document count as empty lists."""
    report = exchange.catalog_import(
        document={
            "format": "mcp-gateway-catalog",
            "version": 1,
            "tools": [{"name": "f", "integration_type": "cli", "backend_config": {"command": "true"}}],
        }
    )
    assert report.created == {"tools": ["f"]}
    assert Tool.objects.get(name="f").input_schema == {"type": "object", "properties": {}}


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


def test_export_with_secrets_encrypts_them_and_import_restores_them(catalog):
    """With include_secrets the credentials travel encrypted (never in clear) and come back on import."""
    document = exchange.catalog_export(include_secrets=True)
    text = json.dumps(document)
    assert BEARER_SECRET not in text
    assert BASIC_SECRET not in text
    assert document["secrets"] == {"encryption": "installation-keys"}
    with_credentials = {g["name"] for g in document["gateways"] if "credentials_encrypted" in g}
    assert with_credentials == {"http-up", "sse-up"}

    wipe()
    exchange.catalog_import(document=json.loads(text))
    assert Gateway.objects.get(name="http-up").get_credentials() == {"token": BEARER_SECRET}
    assert Gateway.objects.get(name="sse-up").get_credentials() == {"username": "svc", "password": BASIC_SECRET}
    assert without_timestamp(exchange.catalog_export()) == without_timestamp(catalog)


def test_import_with_secrets_twice_is_unchanged_and_a_changed_secret_is_a_conflict(catalog):
    """Identical credentials count as unchanged; different ones are a conflict on 'credentials'."""
    document = exchange.catalog_export(include_secrets=True)
    report = exchange.catalog_import(document=document)
    assert report.conflicts == []
    services.entry_update(Gateway.objects.get(name="http-up"), data={"credentials": {"token": "rotated"}})

    report = exchange.catalog_import(document=document)
    assert report.conflicts == [{"kind": "gateways", "key": "http-up", "fields": ["credentials"]}]
    assert Gateway.objects.get(name="http-up").get_credentials() == {"token": "rotated"}

    exchange.catalog_import(document=document, overwrite=True)
    assert Gateway.objects.get(name="http-up").get_credentials() == {"token": BEARER_SECRET}


def test_installation_key_secrets_cannot_be_read_with_other_keys(catalog):
    """An export encrypted with this installation's keys fails clearly elsewhere, and stores nothing."""
    document = exchange.catalog_export(include_secrets=True)
    wipe()
    with (
        override_settings(GATEWAY_ENCRYPTION_KEYS=[Fernet.generate_key().decode()]),
        pytest.raises(InvalidInput, match=r"gateways\[0\]: the credentials cannot be decrypted"),
    ):
        exchange.catalog_import(document=document)
    assert counts() == dict.fromkeys(counts(), 0)


def test_passphrase_export_needs_the_same_passphrase(catalog):
    """Secrets under a passphrase: no passphrase or a wrong one is a clear error and stores nothing."""
    document = exchange.catalog_export(include_secrets=True, passphrase="correct horse")
    assert document["secrets"]["encryption"] == "passphrase"
    assert document["secrets"]["kdf"] == "scrypt"
    assert BEARER_SECRET not in json.dumps(document)
    wipe()

    with pytest.raises(InvalidInput, match="protected by a passphrase"):
        exchange.catalog_import(document=document)
    with pytest.raises(InvalidInput, match="cannot be decrypted \\(wrong passphrase or keys\\)"):
        exchange.catalog_import(document=document, passphrase="wrong horse")
    assert counts() == dict.fromkeys(counts(), 0)

    exchange.catalog_import(document=document, passphrase="correct horse")
    assert Gateway.objects.get(name="http-up").get_credentials() == {"token": BEARER_SECRET}


def test_passphrase_export_moves_between_installations(catalog):
    """A passphrase export imports under different encryption keys and is re-encrypted with them."""
    document = exchange.catalog_export(include_secrets=True, passphrase="pp")
    wipe()
    other_key = Fernet.generate_key().decode()
    with override_settings(GATEWAY_ENCRYPTION_KEYS=[other_key]):
        exchange.catalog_import(document=document, passphrase="pp")
        assert Gateway.objects.get(name="sse-up").get_credentials()["password"] == BASIC_SECRET


@pytest.mark.parametrize("salt", [None, "abc", 5])
def test_passphrase_export_with_a_missing_or_broken_salt_is_rejected(catalog, salt):
    """A passphrase header without a usable base64 salt is refused clearly."""
    document = exchange.catalog_export(include_secrets=True, passphrase="pp")
    if salt is None:
        del document["secrets"]["salt"]
    else:
        document["secrets"]["salt"] = salt
    with pytest.raises(InvalidInput, match=r"'secrets.salt' is missing or not base64"):
        exchange.catalog_import(document=document, passphrase="pp")


def test_passphrase_export_with_a_truncated_salt_is_rejected(catalog):
    """A salt that decodes to fewer than 16 bytes means a damaged document, not a wrong passphrase."""
    document = exchange.catalog_export(include_secrets=True, passphrase="pp")
    document["secrets"]["salt"] = "AAAA"
    with pytest.raises(InvalidInput, match="shorter than 16 bytes"):
        exchange.catalog_import(document=document, passphrase="pp")


# ---------------------------------------------------------------------------------------------
# HTTP: GET /api/export, POST /api/import
# ---------------------------------------------------------------------------------------------


def test_http_export_wipe_import_round_trip(staff_client):
    """GET /api/export, wipe, POST /api/import: the next export is identical apart from exported_at."""
    build_catalog()
    response = staff_client.get("/api/export")
    assert response.status_code == 200
    document = response.json()
    assert without_timestamp(document) == without_timestamp(exchange.catalog_export())
    wipe()

    response = staff_client.post_json("/api/import?dry_run=true", document)
    assert response.status_code == 200
    assert response.json()["dry_run"] is True
    assert response.json()["created"]["tools"] == ["rest-lookup", "stdio.echo", "weather.get"]
    assert counts() == dict.fromkeys(counts(), 0)

    response = staff_client.post_json("/api/import", document)
    assert response.status_code == 200
    assert response.json()["dry_run"] is False
    assert without_timestamp(staff_client.get("/api/export").json()) == without_timestamp(document)

    response = staff_client.post_json("/api/import", document)
    assert response.json()["created"] == {}
    assert sum(len(keys) for keys in response.json()["unchanged"].values()) == 17


def test_http_import_reports_conflicts_and_overwrites_on_request(staff_client, catalog):
    """POST /api/import keeps a changed entry as a conflict; ?overwrite=true replaces it."""
    services.entry_update(Prompt.objects.get(name="summarise"), data={"title": "Local"})
    body = staff_client.post_json("/api/import", catalog).json()
    assert body["conflicts"] == [{"kind": "prompts", "key": "summarise", "fields": ["title"]}]
    assert Prompt.objects.get(name="summarise").title == "Local"

    body = staff_client.post_json("/api/import?overwrite=true", catalog).json()
    assert body["updated"] == {"prompts": ["summarise"]}
    assert Prompt.objects.get(name="summarise").title == "Summarise"


def test_http_invalid_document_is_422_and_stores_nothing(staff_client, catalog):
    """An invalid document is 422 with the reason; nothing is stored."""
    wipe()
    document = copy.deepcopy(catalog)
    document["tools"][-1]["input_schema"] = {"type": "object", "properties": {"x": {"type": 5}}}
    response = staff_client.post_json("/api/import", document)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("tools[2] ('weather.get')")
    assert counts() == dict.fromkeys(counts(), 0)

    response = staff_client.post_json("/api/import", {"format": "mcp-gateway-catalog", "version": 9})
    assert response.status_code == 422
    assert "Unsupported export version 9" in response.json()["detail"]


def test_http_import_body_must_be_json(staff_client):
    """A body that is not JSON is refused (400) saying so; nothing is stored."""
    response = staff_client.post("/api/import", data=b"{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Malformed JSON in the request body")
    assert counts() == dict.fromkeys(counts(), 0)


def test_http_import_needs_write_access(reader_client, anon_client, catalog):
    """A non-staff user may not import (403); without credentials it is 401."""
    assert reader_client.post_json("/api/import", catalog).status_code == 403
    assert anon_client.post_json("/api/import", catalog).status_code == 401


def test_http_export_without_secrets_is_open_to_readers(reader_client, catalog):
    """Any authenticated user may export the catalog without secrets."""
    response = reader_client.get("/api/export")
    assert response.status_code == 200
    assert "secrets" not in response.json()
    assert BEARER_SECRET not in response.content.decode()


def test_http_export_with_secrets_needs_staff(reader_client, staff_client, token_client, catalog):
    """include_secrets is for staff: a non-staff user gets 403; staff (Basic or token) get encrypted secrets."""
    response = reader_client.get("/api/export?include_secrets=true")
    assert response.status_code == 403
    assert "write" in response.json()["detail"]

    for client in (staff_client, token_client):
        response = client.get("/api/export?include_secrets=true")
        assert response.status_code == 200
        assert response.json()["secrets"] == {"encryption": "installation-keys"}
        assert BEARER_SECRET not in response.content.decode()
        assert BASIC_SECRET not in response.content.decode()


def test_http_passphrase_round_trip(staff_client, catalog):
    """X-Catalog-Passphrase encrypts the export's secrets; import needs the same header."""
    response = staff_client.get("/api/export?include_secrets=true", headers={"X-Catalog-Passphrase": "sesame"})
    document = response.json()
    assert document["secrets"]["encryption"] == "passphrase"
    assert BEARER_SECRET not in response.content.decode()
    wipe()

    response = staff_client.post_json("/api/import", document)
    assert response.status_code == 422
    assert "passphrase" in response.json()["detail"]
    response = staff_client.post_json("/api/import", document, headers={"X-Catalog-Passphrase": "wrong"})
    assert response.status_code == 422
    assert "cannot be decrypted" in response.json()["detail"]
    assert counts() == dict.fromkeys(counts(), 0)

    response = staff_client.post_json("/api/import", document, headers={"X-Catalog-Passphrase": "sesame"})
    assert response.status_code == 200
    assert Gateway.objects.get(name="http-up").get_credentials() == {"token": BEARER_SECRET}
    assert without_timestamp(exchange.catalog_export()) == without_timestamp(catalog)


# ---------------------------------------------------------------------------------------------
# Management commands
# ---------------------------------------------------------------------------------------------


def test_commands_export_to_file_wipe_and_import(tmp_path, catalog):
    """catalog_export writes the file; catalog_import --dry-run stores nothing; a real import restores all."""
    path = tmp_path / "catalog.json"
    err = io.StringIO()
    call_command("catalog_export", output=str(path), stderr=err)
    assert f"Wrote {path}: 4 gateways, 3 tools, 4 resources, 2 resource_templates, 2 prompts, 2 servers." in (
        err.getvalue()
    )
    exported = json.loads(path.read_text(encoding="utf-8"))
    assert without_timestamp(exported) == without_timestamp(catalog)
    wipe()

    out = io.StringIO()
    call_command("catalog_import", str(path), dry_run=True, stdout=out)
    assert "Dry run, nothing changed. Would have created: 17 (4 gateways, 3 tools" in out.getvalue()
    assert counts() == dict.fromkeys(counts(), 0)

    out = io.StringIO()
    call_command("catalog_import", str(path), stdout=out)
    assert out.getvalue().splitlines()[0].startswith("created: 17")
    assert without_timestamp(exchange.catalog_export()) == without_timestamp(catalog)

    out = io.StringIO()
    call_command("catalog_import", str(path), stdout=out)
    assert "created: 0" in out.getvalue()
    assert "unchanged: 17" in out.getvalue()


def test_command_export_writes_json_to_stdout(capsys, catalog):
    """Without --output the document goes to standard output."""
    call_command("catalog_export")
    assert without_timestamp(json.loads(capsys.readouterr().out)) == without_timestamp(catalog)


def test_command_import_reports_conflicts(tmp_path, catalog):
    """A changed entry is printed as a conflict and kept; --overwrite replaces it."""
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog))
    services.entry_update(Tool.objects.get(name="stdio.echo"), data={"title": "Local"})
    out = io.StringIO()
    call_command("catalog_import", str(path), stdout=out)
    assert "conflict: tools 'stdio.echo' differs in title (kept; use --overwrite)" in out.getvalue()
    assert Tool.objects.get(name="stdio.echo").title == "Local"
    call_command("catalog_import", str(path), overwrite=True, stdout=io.StringIO())
    assert Tool.objects.get(name="stdio.echo").title == ""


def test_commands_carry_secrets_with_a_passphrase(tmp_path, monkeypatch, catalog):
    """--include-secrets with a passphrase (option or CATALOG_PASSPHRASE) round-trips the credentials."""
    path = tmp_path / "catalog.json"
    call_command("catalog_export", output=str(path), include_secrets=True, passphrase="pw", stderr=io.StringIO())
    assert BEARER_SECRET not in path.read_text()
    wipe()
    with pytest.raises(CommandError, match=r"Nothing was imported: .*passphrase"):
        call_command("catalog_import", str(path))
    with pytest.raises(CommandError, match=r"Nothing was imported: .*cannot be decrypted"):
        call_command("catalog_import", str(path), passphrase="nope")
    assert counts() == dict.fromkeys(counts(), 0)
    monkeypatch.setenv("CATALOG_PASSPHRASE", "pw")
    call_command("catalog_import", str(path), stdout=io.StringIO())
    assert Gateway.objects.get(name="http-up").get_credentials() == {"token": BEARER_SECRET}


def test_command_import_rejects_invalid_files(tmp_path, catalog):
    """A missing file, a file that is not JSON and an invalid document are CommandErrors; nothing is stored."""
    wipe()
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("catalog_import", str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    with pytest.raises(CommandError, match="is not JSON"):
        call_command("catalog_import", str(broken))
    invalid = tmp_path / "invalid.json"
    document = copy.deepcopy(catalog)
    document["tools"].append({"name": "zz", "integration_type": "cli", "input_schema": {"type": "number"}})
    invalid.write_text(json.dumps(document))
    with pytest.raises(CommandError, match=r"Nothing was imported: tools\[3\] \('zz'\)"):
        call_command("catalog_import", str(invalid))
    assert counts() == dict.fromkeys(counts(), 0)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"format": "mcp-gateway-catalog", "version": 1, "secrets": "x"}, "'secrets' must be a JSON object"),
        ({"format": "mcp-gateway-catalog", "version": 1, "secrets": ["x"]}, "'secrets' must be a JSON object"),
        (
            {
                "format": "mcp-gateway-catalog",
                "version": 1,
                "gateways": [
                    {"name": "g", "transport": "streamable-http", "url": "http://x/mcp", "credentials_encrypted": 5}
                ],
            },
            "gateways[0]: 'credentials_encrypted' must be a string",
        ),
    ],
)
def test_http_import_of_misshapen_secrets_is_422_not_500(staff_client, document, message):
    response = staff_client.post_json("/api/import", document)
    assert response.status_code == 422, response.content
    assert message in response.json()["detail"]
