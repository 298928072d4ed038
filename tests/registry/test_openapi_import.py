"""The OpenAPI import service (registry.openapi.openapi_import): operations become REST tools in one
transaction with one catalog event; a re-import of the same source updates them in place and reports what
was added, changed and removed; a dry run stores nothing; include patterns select operations; the tools
join a virtual server; a name held by a tool of another origin is a conflict, never overwritten; a bad
document changes nothing.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from registry import events
from registry.choices import IntegrationType
from registry.exceptions import InvalidInput
from registry.models import CatalogRevision, Tool, VirtualServer
from registry.openapi import openapi_import
from tests.factories import ToolFactory

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "openapi" / "library.yaml"
SOURCE = "https://docs.example.com/library.yaml"
BASE = "http://127.0.0.1:8080/api"
LIBRARY = ["listItems", "createBook", "getBook", "searchBooks", "whoAmI"]

pytestmark = pytest.mark.django_db


def small(**operations: Any) -> dict[str, Any]:
    """A 3.1 document with one path per operation: name -> extra fields of a GET operation."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "small", "version": "1"},
        "servers": [{"url": BASE}],
        "paths": {
            f"/{name}": {"get": {"operationId": name, "responses": {"200": {"description": "ok"}}, **extra}}
            for name, extra in operations.items()
        },
    }


def library(**options: Any):
    return openapi_import(document=FIXTURE.read_bytes(), source=SOURCE, base_url=BASE, **options)


def version() -> int:
    return events.catalog_version()


def test_an_import_creates_one_rest_tool_per_operation_in_one_catalog_event(django_capture_on_commit_callbacks):
    """The tools are REST tools carrying their operation, and the catalog changes once (on commit)."""
    before = version()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        report = library()
    assert report.added == LIBRARY
    assert (report.changed, report.removed, report.unchanged, report.conflicts) == ([], [], [], [])
    assert report.operations["getBook"] == "GET /echo/books/{bookId}"
    assert len(callbacks) == 1
    assert version() == before + 1
    tool = Tool.objects.get(name="getBook")
    assert tool.integration_type == IntegrationType.REST
    assert tool.gateway is None
    assert tool.backend_config["url"] == BASE + "/echo/books/{bookId}"
    assert tool.backend_config["openapi"] == {
        "source": SOURCE,
        "operation": "GET /echo/books/{bookId}",
        "operation_id": "getBook",
    }
    assert tool.input_schema["required"] == ["bookId"]
    assert tool.output_schema["type"] == "object"


def test_importing_the_same_document_again_changes_nothing():
    """A re-import of an unchanged document reports every tool unchanged, and sends no catalog event."""
    library()
    pks = dict(Tool.objects.values_list("name", "pk"))
    before = version()
    report = library()
    assert report.unchanged == LIBRARY
    assert (report.added, report.changed, report.removed) == ([], [], [])
    assert version() == before
    assert dict(Tool.objects.values_list("name", "pk")) == pks


def test_a_re_import_updates_in_place_and_reports_added_changed_and_removed():
    """Changed operations are updated in the same rows (the operator's enabled flag, tags, timeout and backend
    settings the importer does not write stay), new ones added, vanished ones removed."""
    first = small(alpha={"summary": "Alpha"}, beta={"summary": "Beta"}, gamma={})
    openapi_import(document=json.dumps(first), source=SOURCE)
    alpha = Tool.objects.get(name="alpha")
    alpha.enabled, alpha.tags, alpha.timeout = False, ["mine"], 7.5
    alpha.backend_config = {**alpha.backend_config, "retries": 0}
    alpha.save()
    second = copy.deepcopy(first)
    second["paths"]["/alpha"]["get"]["summary"] = "Alpha, renewed"
    del second["paths"]["/gamma"]
    second["paths"]["/delta"] = {"get": {"operationId": "delta", "responses": {"200": {"description": "ok"}}}}
    report = openapi_import(document=json.dumps(second), source=SOURCE)
    assert (report.added, report.changed, report.removed, report.unchanged) == (
        ["delta"],
        ["alpha"],
        ["gamma"],
        ["beta"],
    )
    renewed = Tool.objects.get(name="alpha")
    assert renewed.pk == alpha.pk
    assert renewed.title == "Alpha, renewed"
    assert (renewed.enabled, renewed.tags, renewed.timeout) == (False, ["mine"], 7.5)
    assert renewed.backend_config["retries"] == 0
    assert not Tool.objects.filter(name="gamma").exists()


def test_a_renamed_operation_id_renames_the_tool_in_place():
    """The tool follows its operation ("METHOD /path"): a new operationId renames the same row."""
    openapi_import(document=json.dumps(small(alpha={})), source=SOURCE)
    pk = Tool.objects.get(name="alpha").pk
    renamed = small(alpha={})
    renamed["paths"]["/alpha"]["get"]["operationId"] = "alphaV2"
    report = openapi_import(document=json.dumps(renamed), source=SOURCE)
    assert report.changed == ["alphaV2"]
    assert report.renamed == {"alpha": "alphaV2"}
    assert Tool.objects.get(name="alphaV2").pk == pk


def test_a_dry_run_stores_nothing():
    """dry_run=True checks everything and reports what would happen; no tool, server or event is stored."""
    before = version()
    report = library(dry_run=True, server="books")
    assert report.dry_run
    assert report.added == LIBRARY
    assert report.server_created
    assert not Tool.objects.exists()
    assert not VirtualServer.objects.exists()
    assert version() == before
    assert "dry run: nothing stored" in report.summary()


def test_include_patterns_select_operations_by_id_name_or_method_and_path():
    """fnmatch patterns on the operationId, the tool name or "METHOD /path"; a pattern that selects nothing is
    warned about; what a later import leaves out is removed from the source's tools."""
    report = library(include=["search*", "POST /echo/books", "get /echo/books/*", "nothing*"])
    assert report.added == ["createBook", "getBook", "searchBooks"]
    assert report.warnings == ["The pattern 'nothing*' selects no operation."]
    narrower = library(include=["getBook"])
    assert narrower.unchanged == ["getBook"]
    assert sorted(narrower.removed) == ["createBook", "searchBooks"]
    assert list(Tool.objects.values_list("name", flat=True)) == ["getBook"]


def test_the_tools_join_a_virtual_server_created_when_missing():
    """`server` names a virtual server; it is created when missing, and existing members stay."""
    report = library(server="books")
    assert report.server_created
    server = VirtualServer.objects.get(name="books")
    assert sorted(server.tools.values_list("name", flat=True)) == sorted(LIBRARY)
    other = ToolFactory(name="elsewhere")
    server.tools.add(other)
    again = small(extra={})
    report = openapi_import(document=json.dumps(again), source="other.json", server="books")
    assert not report.server_created
    assert set(server.tools.values_list("name", flat=True)) == {*LIBRARY, "elsewhere", "extra"}


def test_a_bad_server_name_is_refused_and_nothing_is_stored():
    with pytest.raises(InvalidInput, match=r"Virtual server 'Not A Slug'.*not a valid name"):
        library(server="Not A Slug")
    assert not Tool.objects.exists()


def test_a_name_held_by_another_origin_is_a_conflict_and_that_tool_is_left_alone():
    """A tool of an upstream gateway, or of another import, keeps its name and content; the operation that
    wanted the name is not imported and the conflict says which tool holds it."""
    upstream = ToolFactory(name="getBook", description="from upstream")
    openapi_import(document=json.dumps(small(searchBooks={})), source="other.json")
    report = library()
    assert report.added == ["listItems", "createBook", "whoAmI"]
    assert len(report.conflicts) == 2
    assert report.conflicts[0].startswith(
        "GET /echo/books/{bookId}: not imported, the name 'getBook' belongs to a tool of the gateway "
        f"'{upstream.gateway.name}'"
    )
    assert "belongs to a tool imported from 'other.json'" in report.conflicts[1]
    upstream.refresh_from_db()
    assert upstream.description == "from upstream"
    assert upstream.integration_type == IntegrationType.MCP
    assert Tool.objects.get(name="searchBooks").backend_config["openapi"]["source"] == "other.json"


def test_a_different_source_is_a_different_set_of_tools():
    """Tools are matched by their source: importing a second document never touches the first one's tools."""
    openapi_import(document=json.dumps(small(alpha={})), source="a.json")
    report = openapi_import(document=json.dumps(small(beta={})), source="b.json")
    assert report.added == ["beta"]
    assert report.removed == []
    assert Tool.objects.count() == 2


def test_credentials_of_a_security_scheme_are_set_on_its_tools():
    """`credentials` gives a scheme's secrets once for all the tools that use it; they are stored encrypted."""
    document = small(alpha={}, beta={"security": []})
    document["components"] = {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}}
    document["security"] = [{"token": []}]
    report = openapi_import(
        document=json.dumps(document), source=SOURCE, credentials={"token": {"token": "s3cret"}, "unused": {}}
    )
    assert report.added == ["alpha", "beta"]
    assert report.warnings == ["Credentials were given for 'unused', which no imported operation uses."]
    alpha = Tool.objects.get(name="alpha")
    assert alpha.backend_config["auth"]["type"] == "bearer"
    assert alpha.get_credentials() == {"token": "s3cret"}
    assert "s3cret" not in alpha.credentials_encrypted
    assert Tool.objects.get(name="beta").get_credentials() == {}
    assert openapi_import(document=json.dumps(document), source=SOURCE).unchanged == ["alpha", "beta"]
    assert Tool.objects.get(name="alpha").get_credentials() == {"token": "s3cret"}


def test_without_its_secrets_a_secured_operation_is_imported_without_auth_until_they_are_given():
    """A REST tool is only stored with complete credentials, and a document carries no secrets: an operation
    whose scheme's secrets were not given is imported without authentication, with a warning saying which;
    a re-import with them adds the auth, and later imports without them keep it."""
    report = library(include=["whoAmI"])
    assert report.added == ["whoAmI"]
    assert report.warnings == [
        "GET /auth/bearer: its security scheme 'bearerAuth' needs the secrets token, which were not given; the "
        "tool is imported without authentication (import again with credentials for 'bearerAuth' to add it)."
    ]
    assert Tool.objects.get(name="whoAmI").backend_config["auth"] == {"type": "none"}
    again = library(include=["whoAmI"], credentials={"bearerAuth": {"token": "t"}})
    assert (again.changed, again.warnings) == (["whoAmI"], [])
    assert Tool.objects.get(name="whoAmI").backend_config["auth"] == {"type": "bearer"}
    assert library(include=["whoAmI"]).unchanged == ["whoAmI"]
    assert Tool.objects.get(name="whoAmI").get_credentials() == {"token": "t"}


def test_incomplete_secrets_are_refused_naming_the_operation_and_nothing_is_stored():
    with pytest.raises(InvalidInput, match=r"GET /auth/bearer \(tool 'whoAmI'\): .*needs the credentials token"):
        library(credentials={"bearerAuth": {"username": "x"}})
    assert not Tool.objects.exists()


BAD = [
    (b"openapi: [", "not valid YAML"),
    (json.dumps({"swagger": "2.0"}).encode(), "Swagger 2.0"),
    (
        json.dumps(small(a={"parameters": [{"$ref": "https://evil.example.com/p.json"}]})).encode(),
        "is a remote reference",
    ),
    (json.dumps(small(a={"parameters": [{"$ref": "#/components/parameters/Gone"}]})).encode(), "points to nothing"),
]


@pytest.mark.parametrize(("document", "message"), BAD)
def test_a_bad_document_changes_nothing(document, message):
    """A refused document leaves the earlier import's tools, the servers and the catalog version as they were."""
    openapi_import(document=json.dumps(small(alpha={})), source=SOURCE, server="s")
    before = (list(Tool.objects.values_list("pk", "name", "updated_at")), version())
    with pytest.raises(InvalidInput, match=message):
        openapi_import(document=document, source=SOURCE, server="other")
    assert (list(Tool.objects.values_list("pk", "name", "updated_at")), version()) == before
    assert list(VirtualServer.objects.values_list("name", flat=True)) == ["s"]


def test_a_source_is_required():
    with pytest.raises(InvalidInput, match="needs a source"):
        openapi_import(document=json.dumps(small(a={})), source=" ")


def test_the_report_is_plain_data():
    """as_dict() is what the REST API and the command show."""
    data = library(dry_run=True).as_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) >= {"added", "changed", "removed", "unchanged", "conflicts", "warnings", "dry_run", "source"}
    assert CatalogRevision.objects.count() <= 1
