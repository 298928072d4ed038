"""Errors of the REST API as a client meets them: every path under /api/ answers JSON with a message a
person can act on (unknown paths, ids that are not numbers, a foreign Host, a method an endpoint lacks),
bodies are read only as JSON (415 otherwise), and non-finite numbers are refused (422 naming the field)
at every door, so the catalog never stores what JSON cannot say."""

import json
import math

import pytest
from django.core.management import call_command

from registry import exchange, services
from registry.exceptions import InvalidInput
from registry.models import Tool
from tests.factories import ResourceFactory, ToolFactory

pytestmark = pytest.mark.django_db

NON_FINITE = ["Infinity", "-Infinity", "NaN", "1e400", "-1e999"]


def tool_row(tool: Tool) -> dict:
    return Tool.objects.filter(pk=tool.pk).values().get()


# -- non-finite numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("number", NON_FINITE)
def test_a_non_finite_number_in_a_patch_is_refused_naming_the_field(staff_client, number):
    """PATCH {"timeout": Infinity} (which Python's json reads as a float) is 422 naming timeout; nothing is stored."""
    tool = ToolFactory(name="t1", timeout=5.0)
    before = tool_row(tool)
    response = staff_client.patch(
        f"/api/tools/{tool.pk}", data=f'{{"timeout": {number}}}', content_type="application/json"
    )
    assert response.status_code == 422
    body = response.json()
    assert body["errors"][0]["loc"] == "timeout"
    assert "timeout" in body["detail"]
    assert number in body["detail"]
    assert "finite" in body["detail"]
    assert tool_row(tool) == before


def test_non_finite_numbers_deep_in_a_body_are_each_named(staff_client):
    """Inside a JSON object field (a tool's input schema) the path names where each one is."""
    body = (
        '{"name": "deep", "integration_type": "function",'
        ' "backend_config": {"function": "tests.fixtures.functions.echo"},'
        ' "input_schema": {"type": "object", "properties": {"n": {"type": "number", "maximum": Infinity}}},'
        ' "annotations": {"x": [1, NaN]}}'
    )
    response = staff_client.post("/api/tools", data=body, content_type="application/json")
    assert response.status_code == 422
    locations = {error["loc"] for error in response.json()["errors"]}
    assert locations == {"input_schema.properties.n.maximum", "annotations.x.1"}
    assert not Tool.objects.filter(name="deep").exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/api/tools/validate"), ("put", "/api/tools/{pk}"), ("post", "/api/servers"), ("post", "/api/tokens")],
)
def test_every_json_body_refuses_non_finite_numbers(staff_client, method, path):
    """The one parser of the API reads every operation's body: the same 422 whichever endpoint."""
    tool = ToolFactory(name="t2")
    response = getattr(staff_client, method)(
        path.format(pk=tool.pk), data='{"name": "x", "timeout": -Infinity}', content_type="application/json"
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == "timeout"


def test_a_catalog_import_with_infinity_is_refused_over_the_api(staff_client):
    document = exchange.catalog_export()
    document["tools"] = [{"name": "imported", "integration_type": "function", "timeout": 1.0}]
    raw = json.dumps(document).replace('"timeout": 1.0', '"timeout": Infinity')
    response = staff_client.post("/api/import", data=raw, content_type="application/json")
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == "tools.0.timeout"
    assert not Tool.objects.filter(name="imported").exists()


def test_a_catalog_import_by_command_with_infinity_stores_nothing(tmp_path):
    """The command reads the file with Python's json (Infinity and all): the write itself refuses it."""
    tool = ToolFactory(name="kept", timeout=3.0)
    document = exchange.catalog_export()
    document["tools"][0]["timeout"] = math.inf
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(document))
    with pytest.raises(Exception, match="finite"):
        call_command("catalog_import", str(path), "--overwrite")
    assert Tool.objects.get(pk=tool.pk).timeout == 3.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("timeout", math.inf), ("timeout", math.nan), ("input_schema", {"type": "object", "maximum": -math.inf})],
)
def test_the_write_service_refuses_non_finite_values_whatever_the_door(field, value):
    """Admin forms and commands write through the services: they refuse Infinity and NaN, naming the field."""
    tool = ToolFactory(name="svc")
    with pytest.raises(InvalidInput) as refused:
        services.entry_update(tool, data={field: value})
    assert field in refused.value.errors
    assert "finite" in refused.value.message


# -- JSON errors everywhere under /api/ ----------------------------------------------------------------


def assert_json_error(response, status):
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert detail
    return detail


def test_a_path_parameter_of_the_wrong_type_is_a_json_404_that_says_ids_are_numbers(staff_client):
    detail = assert_json_error(staff_client.get("/api/tools/abc"), 404)
    assert "'abc' is not an id" in detail
    assert "/api/docs" in detail
    detail = assert_json_error(staff_client.post("/api/gateways/x1/check", content_type="application/json"), 404)
    assert "'x1' is not an id" in detail


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
def test_an_unknown_api_path_is_a_json_404_whatever_the_method(staff_client, anon_client, method):
    for client in (staff_client, anon_client):
        detail = assert_json_error(getattr(client, method)("/api/nope"), 404)
        assert "No API endpoint at /api/nope" in detail
        assert "/api/docs" in detail


def test_a_foreign_host_is_a_json_400_naming_the_host(staff_client):
    staff_client.raise_request_exception = False
    detail = assert_json_error(staff_client.get("/api/tools", HTTP_HOST="evil.example"), 400)
    assert "'evil.example'" in detail
    assert "ALLOWED_HOSTS" in detail


def test_a_method_an_endpoint_lacks_is_a_json_405_with_allow(staff_client):
    response = staff_client.delete("/api/tools")
    detail = assert_json_error(response, 405)
    assert response["Allow"] == "GET, POST"
    assert detail == "DELETE is not allowed on /api/tools: use GET or POST."
    response = staff_client.put("/api/export", data="{}", content_type="application/json")
    assert_json_error(response, 405)
    assert response["Allow"] == "GET"


def test_an_unexpected_failure_under_api_is_a_json_500(staff_client, monkeypatch):
    staff_client.raise_request_exception = False

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("registry.selectors.entry_list", broken)
    detail = assert_json_error(staff_client.get("/api/tools"), 500)
    assert "boom" not in detail


def test_pages_outside_the_api_keep_django_html_errors(staff_client, client):
    client.raise_request_exception = False
    assert client.get("/nope")["Content-Type"].startswith("text/html")
    assert client.get("/nope", HTTP_HOST="evil.example")["Content-Type"].startswith("text/html")


# -- media types -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", ""])
def test_a_body_that_is_not_json_is_refused_with_415(staff_client, content_type):
    for method, path in [("post", "/api/tools"), ("post", "/api/import"), ("post", "/api/tools/validate")]:
        response = getattr(staff_client, method)(path, data=b'{"name": "x"}', content_type=content_type)
        detail = assert_json_error(response, 415)
        assert "Content-Type: application/json" in detail
    assert not Tool.objects.filter(name="x").exists()


def test_json_media_types_with_parameters_or_a_json_suffix_are_read(staff_client):
    tool = ToolFactory(name="t3")
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = staff_client.patch(f"/api/tools/{tool.pk}", data='{"enabled": false}', content_type=content_type)
        assert response.status_code == 200, response.content


def test_malformed_json_is_a_400_saying_where(staff_client):
    detail = assert_json_error(staff_client.post("/api/tools", data="{nope", content_type="application/json"), 400)
    assert detail.startswith("Malformed JSON in the request body")
    detail = assert_json_error(staff_client.post("/api/tools", data=b"\xff\xfe{", content_type="application/json"), 400)
    assert detail.startswith("Malformed JSON in the request body")


# -- what schemathesis found (tests/registry/test_openapi_fuzz.py), each now a refusal, not a 500 or a pass --


def test_a_patch_with_a_blob_that_is_not_base64_is_422(staff_client):
    resource = ResourceFactory()
    response = staff_client.patch(
        f"/api/resources/{resource.pk}", data='{"blob": "AAA"}', content_type="application/json"
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == "blob"


def test_a_gateway_url_urlsplit_cannot_read_is_422(staff_client):
    response = staff_client.post_json("/api/gateways?sync=false", {"name": "bad", "url": "http://[oops/mcp"})
    assert response.status_code == 422
    assert "url" in response.json()["errors"]


def test_revoking_an_id_longer_than_any_jti_is_422(staff_client):
    response = staff_client.post_json("/api/tokens/revoke", {"token": "x" * 200})
    assert response.status_code == 422
    assert staff_client.post(f"/api/tokens/{'x' * 200}/revoke").status_code == 422


@pytest.mark.parametrize(
    ("path", "body"),
    [("/api/servers", {"name": "s1", "enabled": 0}), ("/api/tools/validate", {"name": "t", "tags": "x"})],
)
def test_body_values_must_have_their_json_type(staff_client, path, body):
    """No lax coercion: 0 is not false, a string is not a list (the document says boolean, array)."""
    assert staff_client.post_json(path, body).status_code == 422


def test_a_patch_may_not_null_a_field_that_is_not_nullable(staff_client):
    tool = ToolFactory(name="t4")
    response = staff_client.patch_json(f"/api/tools/{tool.pk}", {"title": None})
    assert response.status_code == 422
    assert "leave the field out" in response.json()["detail"]


def test_an_import_whose_secrets_is_not_an_object_is_422(staff_client):
    document = exchange.catalog_export() | {"secrets": ""}
    assert staff_client.post_json("/api/import", document).status_code == 422


@pytest.mark.parametrize("value", ["0.5", "2026-01-01", "2026-01-01T00:00:00"])
def test_audit_times_must_be_rfc_3339(staff_client, value):
    """A bare number (read as a Unix time) or a time without its offset is refused, as the document says."""
    assert staff_client.get("/api/audit", {"since": value}).status_code == 422
    assert staff_client.get("/api/audit", {"since": "2026-01-01T00:00:00Z"}).status_code == 200


def test_a_multipart_body_without_a_boundary_is_a_json_400(staff_client):
    response = staff_client.generic(
        "POST", "/api/tools/openapi-import", data=b"--x--\r\n", content_type="multipart/form-data"
    )
    detail = assert_json_error(response, 400)
    assert "multipart" in detail
