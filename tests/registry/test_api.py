"""The REST API under /api/: CRUD, lists and filters of every catalog entity, error statuses, and
that a refused request leaves the stored catalog exactly as it was."""

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import models
from django.test import override_settings

from registry.choices import AuthType, Health, IntegrationType, Transport
from registry.events import catalog_version
from registry.models import Gateway, Prompt, Resource, ResourceTemplate, Tool, VirtualServer
from tests.factories import (
    GatewayFactory,
    PromptFactory,
    ResourceFactory,
    ResourceTemplateFactory,
    ToolFactory,
    VirtualServerFactory,
)

pytestmark = pytest.mark.django_db

CATALOG_MODELS = (Gateway, Tool, Resource, ResourceTemplate, Prompt, VirtualServer)
MEMBER_FIELDS = ("tools", "resources", "resource_templates", "prompts")
SECRET_PASSWORD = "s3cret-upstream-password-do-not-leak"
SECRET_TOKEN = "upstream-bearer-token-do-not-leak"


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def catalog_state() -> dict[str, Any]:
    """Every stored row of the catalog, virtual-server memberships and the catalog version."""
    state: dict[str, Any] = {model.__name__: list(model.objects.order_by("pk").values()) for model in CATALOG_MODELS}
    for field in MEMBER_FIELDS:
        through = getattr(VirtualServer, field).through
        state[f"VirtualServer.{field}"] = list(through.objects.order_by("pk").values())
    state["version"] = catalog_version()
    return state


@contextmanager
def catalog_unchanged() -> Iterator[None]:
    """Assert that nothing stored changes (rows, members, catalog version) inside the block."""
    before = catalog_state()
    yield
    assert catalog_state() == before


def origin() -> Gateway:
    """The gateway that upstream entries of the generic tests come from."""
    return Gateway.objects.filter(name="origin").first() or GatewayFactory(name="origin")


def with_credentials(gateway: Gateway, auth_type: str, credentials: dict[str, Any]) -> Gateway:
    gateway.set_credentials(auth_type, credentials)
    gateway.save()
    return gateway


ADD_FUNCTION = {"function": "tests.fixtures.functions.add"}
ECHO_REST = {"url": "https://api.example.com/echo"}


def make_tool(name: str, **kw: Any) -> Tool:
    """A gateway's tool when a gateway is given, else a local (function) one."""
    if kw.get("gateway") is not None:
        return ToolFactory(name=name, **kw)
    return ToolFactory(
        name=name, **{"integration_type": "function", "gateway": None, "backend_config": ADD_FUNCTION, **kw}
    )


@dataclass(frozen=True)
class Entity:
    """How the generic tests make, describe and name one kind of catalog entry."""

    prefix: str
    model: type[models.Model]
    key: str
    make: Callable[..., models.Model]  # make(i, **overrides): a stored entry whose key sorts by i
    payload: Callable[[int], dict[str, Any]]  # payload(i): a valid create body with the same key as make(i)

    def __str__(self) -> str:
        return self.prefix

    @property
    def create_path(self) -> str:
        """POST target; gateways are stored without connecting (their upstreams do not exist here)."""
        return f"/api/{self.prefix}?sync=false" if self.prefix == "gateways" else f"/api/{self.prefix}"


ENTITIES = [
    Entity(
        prefix="gateways",
        model=Gateway,
        key="name",
        make=lambda i, **kw: GatewayFactory(name=f"gw-{i:02d}", **kw),
        payload=lambda i: {"name": f"gw-{i:02d}", "url": f"https://mcp{i}.example.com/mcp", "description": "A peer."},
    ),
    Entity(
        prefix="tools",
        model=Tool,
        key="name",
        # A local (function) tool: every field of a gateway's tool that its upstream owns is read-only.
        make=lambda i, **kw: make_tool(f"tool.{i:02d}", **kw),
        payload=lambda i: {
            "name": f"tool.{i:02d}",
            "integration_type": "function",
            "backend_config": ADD_FUNCTION,
            "description": "Adds numbers.",
        },
    ),
    Entity(
        prefix="resources",
        model=Resource,
        key="uri",
        make=lambda i, **kw: ResourceFactory(uri=f"file:///notes/{i:02d}.txt", **kw),
        payload=lambda i: {"uri": f"file:///notes/{i:02d}.txt", "name": f"note {i}", "text": "hello"},
    ),
    Entity(
        prefix="resource-templates",
        model=ResourceTemplate,
        key="uri_template",
        make=lambda i, **kw: ResourceTemplateFactory(
            uri_template=f"file:///logs/{i:02d}/{{day}}.txt", **{"gateway": None, **kw}
        ),
        payload=lambda i: {"uri_template": f"file:///logs/{i:02d}/{{day}}.txt", "name": f"logs {i}"},
    ),
    Entity(
        prefix="prompts",
        model=Prompt,
        key="name",
        make=lambda i, **kw: PromptFactory(name=f"prompt.{i:02d}", **kw),
        payload=lambda i: {"name": f"prompt.{i:02d}", "template": "Hi {{ who }}", "arguments": [{"name": "who"}]},
    ),
    Entity(
        prefix="servers",
        model=VirtualServer,
        key="name",
        make=lambda i, **kw: VirtualServerFactory(name=f"srv-{i:02d}", **kw),
        payload=lambda i: {"name": f"srv-{i:02d}", "title": "Server"},
    ),
]
SOURCE_ENTITIES = [e for e in ENTITIES if e.prefix in {"tools", "resources", "resource-templates", "prompts"}]


def make_upstream(entity: Entity, i: int, gateway: Gateway) -> models.Model:
    """An entry of a source entity that comes from the given gateway."""
    if entity.model is Resource:
        return entity.make(i, gateway=gateway, text=None)
    if entity.model is Prompt:
        return entity.make(i, gateway=gateway, template="")
    return entity.make(i, gateway=gateway)


def keys(response) -> list[str]:
    return [item.get("name") or item.get("uri") or item.get("uri_template") for item in response.json()["items"]]


# ---------------------------------------------------------------------------------------------
# Generic CRUD, for every entity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
def test_create_returns_201_with_the_stored_entry(staff_client, entity):
    """POST creates an entry and answers 201 with its representation, including id and timestamps."""
    payload = entity.payload(1)
    response = staff_client.post_json(entity.create_path, payload)
    assert response.status_code == 201, response.content
    body = response.json()
    stored = entity.model.objects.get(**{entity.key: payload[entity.key]})
    assert body["id"] == stored.pk
    for field, value in payload.items():
        assert body[field] == value
    assert body["created_at"]
    assert body["updated_at"]


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
def test_read_returns_the_entry_by_id(staff_client, entity):
    """GET /{id} returns the entry with that id."""
    obj = entity.make(3)
    response = staff_client.get(f"/api/{entity.prefix}/{obj.pk}")
    assert response.status_code == 200
    assert response.json()["id"] == obj.pk
    assert response.json()[entity.key] == getattr(obj, entity.key)


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
def test_read_of_an_unknown_id_is_404(staff_client, entity):
    """GET /{id} of an id that does not exist answers 404 with a JSON detail."""
    response = staff_client.get(f"/api/{entity.prefix}/987654")
    assert response.status_code == 404
    assert "987654" in response.json()["detail"]


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_write_to_an_unknown_id_is_404_and_changes_nothing(staff_client, entity, method):
    """PUT, PATCH and DELETE of an id that does not exist answer 404 and store nothing."""
    entity.make(1)
    payload = entity.payload(2)
    with catalog_unchanged():
        if method == "delete":
            response = staff_client.delete(f"/api/{entity.prefix}/987654")
        else:
            response = getattr(staff_client, f"{method}_json")(f"/api/{entity.prefix}/987654", payload)
    assert response.status_code == 404
    assert response.json()["detail"]


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
def test_list_is_paginated_with_limit_and_offset(staff_client, entity):
    """A list answers {items, count}; limit and offset pick a page of the ordered entries."""
    for i in range(5):
        entity.make(i)
    everything = staff_client.get(f"/api/{entity.prefix}")
    assert everything.status_code == 200
    all_keys = keys(everything)
    assert len(all_keys) == 5
    assert everything.json()["count"] == 5

    page = staff_client.get(f"/api/{entity.prefix}", {"limit": 2, "offset": 1})
    assert page.json()["count"] == 5
    assert keys(page) == all_keys[1:3]

    last = staff_client.get(f"/api/{entity.prefix}", {"limit": 2, "offset": 4})
    assert keys(last) == all_keys[4:]
    beyond = staff_client.get(f"/api/{entity.prefix}", {"offset": 10})
    assert beyond.json() == {"items": [], "count": 5}


@override_settings(GATEWAY_PAGE_SIZE=2)
def test_list_uses_the_default_page_size_without_limit(staff_client):
    """Without limit, a list returns GATEWAY_PAGE_SIZE entries and the full count."""
    for i in range(3):
        ToolFactory(name=f"tool.{i}")
    body = staff_client.get("/api/tools").json()
    assert len(body["items"]) == 2
    assert body["count"] == 3


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
def test_list_filters_by_free_text(staff_client, entity):
    """q finds entries whose name or description contains the text, case-insensitively."""
    entity.make(1, description="Talks to the WEATHER service")
    entity.make(2, description="Something else")
    response = staff_client.get(f"/api/{entity.prefix}", {"q": "weather"})
    assert response.json()["count"] == 1
    assert response.json()["items"][0]["description"] == "Talks to the WEATHER service"


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
def test_list_filters_by_enabled(staff_client, entity):
    """enabled=false lists only disabled entries, enabled=true only enabled ones."""
    entity.make(1, enabled=True)
    disabled = entity.make(2, enabled=False)
    off = staff_client.get(f"/api/{entity.prefix}", {"enabled": "false"}).json()
    assert [item["id"] for item in off["items"]] == [disabled.pk]
    on = staff_client.get(f"/api/{entity.prefix}", {"enabled": "true"}).json()
    assert on["count"] == 1
    assert on["items"][0]["enabled"] is True


@pytest.mark.parametrize("entity", SOURCE_ENTITIES, ids=str)
def test_list_filters_by_gateway_name(staff_client, entity):
    """gateway=<name> lists only the entries that come from that gateway."""
    alpha, beta = GatewayFactory(name="alpha"), GatewayFactory(name="beta")
    mine = make_upstream(entity, 1, alpha)
    make_upstream(entity, 2, beta)
    response = staff_client.get(f"/api/{entity.prefix}", {"gateway": "alpha"})
    assert [item["id"] for item in response.json()["items"]] == [mine.pk]
    assert response.json()["items"][0]["gateway"] == "alpha"
    assert staff_client.get(f"/api/{entity.prefix}", {"gateway": "nobody"}).json() == {"items": [], "count": 0}


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
def test_put_replaces_the_entry(staff_client, entity):
    """PUT stores the body as the entry's new content and answers 200 with it."""
    obj = entity.make(1, description="old text")
    payload = {**entity.payload(1), "description": "new text"}
    response = staff_client.put_json(f"/api/{entity.prefix}/{obj.pk}", payload)
    assert response.status_code == 200, response.content
    assert response.json()["description"] == "new text"
    obj.refresh_from_db()
    assert obj.description == "new text"


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
def test_patch_changes_only_the_fields_sent(staff_client, entity):
    """PATCH changes the fields in the body and leaves every other field as it was."""
    obj = entity.make(1, description="old text", enabled=False)
    key = getattr(obj, entity.key)
    response = staff_client.patch_json(f"/api/{entity.prefix}/{obj.pk}", {"description": "new text"})
    assert response.status_code == 200, response.content
    assert response.json()["description"] == "new text"
    assert (response.json()["enabled"], response.json()[entity.key]) == (False, key)
    obj.refresh_from_db()
    assert (obj.description, obj.enabled, getattr(obj, entity.key)) == ("new text", False, key)


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
def test_delete_removes_the_entry(staff_client, entity):
    """DELETE answers 204 with no body, and the entry is gone."""
    obj = entity.make(1)
    response = staff_client.delete(f"/api/{entity.prefix}/{obj.pk}")
    assert response.status_code == 204
    assert response.content == b""
    assert not entity.model.objects.filter(pk=obj.pk).exists()
    assert staff_client.get(f"/api/{entity.prefix}/{obj.pk}").status_code == 404


# ---------------------------------------------------------------------------------------------
# Bad input, for every entity: 409, 422 for unknown fields and wrong types
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
def test_create_with_a_taken_key_is_409_and_changes_nothing(staff_client, entity):
    """Creating an entry whose name/URI is taken answers 409 naming the field; nothing is stored."""
    entity.make(1)
    payload = entity.payload(1)
    with catalog_unchanged():
        response = staff_client.post_json(entity.create_path, payload)
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]
    assert response.json()["errors"] == {entity.key: ["Already taken."]}


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
def test_renaming_to_a_taken_key_is_409_and_changes_nothing(staff_client, entity):
    """PATCH that would give an entry another entry's name/URI answers 409; neither entry changes."""
    first = entity.make(1)
    second = entity.make(2)
    with catalog_unchanged():
        response = staff_client.patch_json(
            f"/api/{entity.prefix}/{second.pk}", {entity.key: getattr(first, entity.key)}
        )
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_unknown_fields_are_422_and_change_nothing(staff_client, entity, method):
    """A body with a field the API does not know answers 422 naming it; nothing is stored."""
    obj = entity.make(1)
    payload = {**entity.payload(2), "descripton": "typo"}
    path = f"/api/{entity.prefix}" + ("" if method == "post" else f"/{obj.pk}")
    with catalog_unchanged():
        response = getattr(staff_client, f"{method}_json")(path, payload)
    assert response.status_code == 422
    assert "descripton" in response.json()["detail"]
    assert response.json()["errors"][0]["loc"] == "descripton"


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
@pytest.mark.parametrize(
    ("field", "value"),
    [("description", 12), ("enabled", "maybe"), ("enabled", [True]), ("description", {"text": "x"})],
)
def test_wrong_types_are_422_and_change_nothing(staff_client, entity, field, value):
    """A field of the wrong JSON type answers 422 naming the field; nothing is stored."""
    obj = entity.make(1)
    payload = {**entity.payload(2), field: value}
    with catalog_unchanged():
        created = staff_client.post_json(entity.create_path, payload)
        patched = staff_client.patch_json(f"/api/{entity.prefix}/{obj.pk}", {field: value})
    for response in (created, patched):
        assert response.status_code == 422
        assert [error["loc"] for error in response.json()["errors"]] == [field]


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
def test_create_without_a_required_field_is_422(staff_client, entity):
    """A create body without the natural key answers 422 naming the missing field."""
    payload = entity.payload(1)
    del payload[entity.key]
    with catalog_unchanged():
        response = staff_client.post_json(entity.create_path, payload)
    assert response.status_code == 422
    assert entity.key in [error["loc"] for error in response.json()["errors"]]


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
@pytest.mark.parametrize("field", ["description", "enabled", "name"])
def test_patch_with_null_for_a_non_nullable_field_is_422(staff_client, entity, field):
    """PATCH {"field": null} for a field that cannot be empty answers 422 (not 409 or 500)."""
    obj = entity.make(1)
    with catalog_unchanged():
        response = staff_client.patch_json(f"/api/{entity.prefix}/{obj.pk}", {field: None})
    assert response.status_code == 422
    assert field in response.json()["detail"]


def test_patch_with_null_tags_is_422_not_a_server_error(staff_client):
    """PATCH {"tags": null} of a tool answers 422 and keeps its tags."""
    tool = ToolFactory(tags=["math"])
    with catalog_unchanged():
        response = staff_client.patch_json(f"/api/tools/{tool.pk}", {"tags": None})
    assert response.status_code == 422
    tool.refresh_from_db()
    assert tool.tags == ["math"]


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
def test_malformed_json_is_400_and_changes_nothing(staff_client, entity):
    """A body that is not JSON answers 400 'Malformed JSON'; nothing is stored."""
    obj = entity.make(1)
    with catalog_unchanged():
        created = staff_client.post(f"/api/{entity.prefix}", data='{"name": "x",', content_type="application/json")
        patched = staff_client.patch(
            f"/api/{entity.prefix}/{obj.pk}", data="{name: x}", content_type="application/json"
        )
    for response in (created, patched):
        assert response.status_code == 400
        assert response.json()["detail"].startswith("Malformed JSON")


def test_a_json_body_that_is_not_an_object_is_422(staff_client):
    """A JSON array where an object is expected answers 422; nothing is stored."""
    with catalog_unchanged():
        response = staff_client.post("/api/tools", data="[1, 2]", content_type="application/json")
    assert response.status_code == 422


@pytest.mark.parametrize("entity", ENTITIES, ids=str)
def test_a_body_larger_than_the_limit_is_413_and_changes_nothing(staff_client, entity):
    """A body over GATEWAY_MAX_BODY_BYTES answers 413 naming the limit; nothing is stored."""
    payload = {**entity.payload(1), "description": "x" * 5000}
    with (
        override_settings(GATEWAY_MAX_BODY_BYTES=2048, DATA_UPLOAD_MAX_MEMORY_SIZE=2048),
        catalog_unchanged(),
    ):
        response = staff_client.post_json(entity.create_path, payload)
    assert response.status_code == 413
    assert "2048" in response.json()["detail"]


def test_a_body_just_under_the_limit_is_accepted(staff_client):
    """A body below GATEWAY_MAX_BODY_BYTES is processed normally."""
    payload = {
        "name": "fits",
        "integration_type": "cli",
        "backend_config": {"command": "true"},
        "description": "x" * 1000,
    }
    with override_settings(GATEWAY_MAX_BODY_BYTES=2048, DATA_UPLOAD_MAX_MEMORY_SIZE=2048):
        response = staff_client.post_json("/api/tools", payload)
    assert response.status_code == 201


def test_an_oversized_import_is_413_and_changes_nothing(staff_client):
    """POST /api/import with a body over the limit answers 413; nothing is imported."""
    document = {"format": "mcp-gateway-catalog", "version": 1, "tools": [], "padding": "x" * 5000}
    with (
        override_settings(GATEWAY_MAX_BODY_BYTES=2048, DATA_UPLOAD_MAX_MEMORY_SIZE=2048),
        catalog_unchanged(),
    ):
        response = staff_client.post_json("/api/import", document)
    assert response.status_code == 413


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": -1}, {"limit": 1001}, {"offset": -1}, {"limit": "ten"}, {"offset": "x"}],
    ids=["limit-0", "limit-negative", "limit-over-max", "offset-negative", "limit-text", "offset-text"],
)
def test_limit_or_offset_out_of_range_is_422(staff_client, params):
    """limit outside 1..GATEWAY_MAX_PAGE_SIZE, a negative offset, or non-numbers answer 422."""
    ToolFactory()
    response = staff_client.get("/api/tools", params)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_limit_equal_to_the_maximum_is_accepted(staff_client):
    """limit=GATEWAY_MAX_PAGE_SIZE is the largest accepted page."""
    assert staff_client.get("/api/tools", {"limit": 1000}).status_code == 200


@override_settings(GATEWAY_MAX_PAGE_SIZE=3, GATEWAY_PAGE_SIZE=2)
def test_the_maximum_page_size_follows_the_setting(staff_client):
    """limit above GATEWAY_MAX_PAGE_SIZE answers 422 with the configured maximum in the message."""
    response = staff_client.get("/api/tools", {"limit": 4})
    assert response.status_code == 422
    assert "between 1 and 3" in response.json()["detail"]


@pytest.mark.parametrize(("param", "value"), [("enabled", "perhaps"), ("transport", "carrier-pigeon")])
def test_a_filter_with_an_invalid_value_is_422(staff_client, param, value):
    """A filter value of the wrong kind answers 422 naming the parameter."""
    response = staff_client.get("/api/gateways", {param: value})
    assert response.status_code == 422
    assert param in response.json()["detail"]


def test_anonymous_request_is_401_and_changes_nothing(anon_client):
    """Without credentials, reads and writes answer 401 with a WWW-Authenticate header."""
    with catalog_unchanged():
        read = anon_client.get("/api/tools")
        write = anon_client.post_json("/api/servers", {"name": "sneaky"})
    for response in (read, write):
        assert response.status_code == 401
        assert "Bearer" in response["WWW-Authenticate"]


def test_non_staff_write_is_403_and_changes_nothing(reader_client):
    """A user who may read but not write gets 403 on POST, PUT, PATCH and DELETE; nothing changes."""
    server = VirtualServerFactory(name="kept")
    with catalog_unchanged():
        responses = [
            reader_client.post_json("/api/servers", {"name": "new"}),
            reader_client.put_json(f"/api/servers/{server.pk}", {"name": "kept", "title": "x"}),
            reader_client.patch_json(f"/api/servers/{server.pk}", {"title": "x"}),
            reader_client.delete(f"/api/servers/{server.pk}"),
        ]
    for response in responses:
        assert response.status_code == 403
        assert "'write'" in response.json()["detail"]
    assert reader_client.get(f"/api/servers/{server.pk}").status_code == 200


# ---------------------------------------------------------------------------------------------
# Gateways
# ---------------------------------------------------------------------------------------------


def test_gateway_create_with_credentials_reports_has_credentials_without_the_secret(staff_client):
    """Credentials are write-only: the response says has_credentials and never contains them."""
    payload = {
        "name": "github",
        "url": "https://mcp.example.com/mcp",
        "auth_type": "basic",
        "credentials": {"username": "robot", "password": SECRET_PASSWORD},
    }
    response = staff_client.post_json("/api/gateways?sync=false", payload)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["has_credentials"] is True
    assert body["auth_type"] == "basic"
    assert "credentials" not in body
    assert "credentials_encrypted" not in body
    assert SECRET_PASSWORD not in response.content.decode()
    gateway = Gateway.objects.get(name="github")
    assert gateway.get_credentials() == {"username": "robot", "password": SECRET_PASSWORD}
    assert SECRET_PASSWORD not in gateway.credentials_encrypted


def test_gateway_secrets_appear_in_no_response_body(staff_client):
    """No read, list, write or export response (without include_secrets) contains a credential."""
    gateway = with_credentials(GatewayFactory(name="secretive"), AuthType.BEARER, {"token": SECRET_TOKEN})
    encrypted = gateway.credentials_encrypted
    responses = [
        staff_client.get("/api/gateways"),
        staff_client.get(f"/api/gateways/{gateway.pk}"),
        staff_client.get("/api/gateways", {"q": "secretive"}),
        staff_client.patch_json(f"/api/gateways/{gateway.pk}", {"description": "changed"}),
        staff_client.put_json(
            f"/api/gateways/{gateway.pk}",
            {"name": "secretive", "url": gateway.url, "auth_type": "bearer", "credentials": {"token": SECRET_TOKEN}},
        ),
        staff_client.get("/api/export"),
    ]
    for response in responses:
        assert response.status_code == 200, response.content
        text = response.content.decode()
        assert SECRET_TOKEN not in text
        assert encrypted not in text
        assert "credentials_encrypted" not in text
    assert responses[1].json()["has_credentials"] is True


def test_export_with_include_secrets_carries_credentials_encrypted_only(staff_client):
    """include_secrets adds credentials_encrypted to the export; the plain secret still never appears."""
    with_credentials(GatewayFactory(name="secretive"), AuthType.BASIC, {"username": "u", "password": SECRET_PASSWORD})
    response = staff_client.get("/api/export", {"include_secrets": "true"})
    assert response.status_code == 200
    assert SECRET_PASSWORD not in response.content.decode()
    document = response.json()
    assert document["secrets"] == {"encryption": "installation-keys"}
    assert document["gateways"][0]["credentials_encrypted"]


def test_gateway_patch_without_credentials_keeps_them(staff_client):
    """PATCH of other fields leaves the stored credentials as they were."""
    gateway = with_credentials(GatewayFactory(), AuthType.BEARER, {"token": SECRET_TOKEN})
    response = staff_client.patch_json(f"/api/gateways/{gateway.pk}", {"description": "new"})
    assert response.status_code == 200
    assert response.json()["has_credentials"] is True
    gateway.refresh_from_db()
    assert gateway.get_credentials() == {"token": SECRET_TOKEN}


def test_gateway_patch_with_new_credentials_replaces_them(staff_client):
    """PATCH with credentials replaces the stored ones; the new value is not echoed."""
    gateway = with_credentials(GatewayFactory(), AuthType.BEARER, {"token": "old-token"})
    response = staff_client.patch_json(f"/api/gateways/{gateway.pk}", {"credentials": {"token": SECRET_TOKEN}})
    assert response.status_code == 200
    assert SECRET_TOKEN not in response.content.decode()
    gateway.refresh_from_db()
    assert gateway.get_credentials() == {"token": SECRET_TOKEN}


def test_gateway_patch_auth_type_none_clears_credentials(staff_client):
    """Switching auth_type to none forgets the credentials."""
    gateway = with_credentials(GatewayFactory(), AuthType.BEARER, {"token": SECRET_TOKEN})
    response = staff_client.patch_json(f"/api/gateways/{gateway.pk}", {"auth_type": "none"})
    assert response.status_code == 200
    assert response.json()["has_credentials"] is False
    gateway.refresh_from_db()
    assert gateway.credentials_encrypted == ""


def test_gateway_put_resets_fields_that_are_left_out(staff_client):
    """PUT is a replacement: fields missing from the body return to their defaults."""
    gateway = GatewayFactory(description="old", verify_tls=False, enabled=False)
    response = staff_client.put_json(f"/api/gateways/{gateway.pk}", {"name": gateway.name, "url": gateway.url})
    assert response.status_code == 200
    body = response.json()
    assert (body["description"], body["verify_tls"], body["enabled"]) == ("", True, True)


def test_gateway_stdio_create_takes_command_args_env_and_cwd(staff_client):
    """A stdio gateway stores its command, arguments, environment and working directory."""
    payload = {
        "name": "local-files",
        "transport": "stdio",
        "command": "uvx",
        "args": ["mcp-server-filesystem", "/tmp"],
        "env": {"LOG_LEVEL": "debug"},
        "cwd": "/srv",
    }
    response = staff_client.post_json("/api/gateways?sync=false", payload)
    assert response.status_code == 201, response.content
    body = response.json()
    assert {key: body[key] for key in payload} == payload
    assert (body["url"], body["health"], body["has_credentials"]) == ("", "unknown", False)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"transport": "stdio"}, "command"),
        ({"transport": "stdio", "command": "x", "url": "https://a.example.com"}, "url"),
        ({"url": "https://a.example.com", "command": "x"}, "command"),
        ({}, "url"),
        ({"url": "ftp://a.example.com/mcp"}, "url"),
        ({"url": "wss://a.example.com/mcp"}, "url"),
        ({"transport": "websocket", "url": "https://a.example.com/mcp"}, "url"),
        ({"url": "https://a.example.com", "ca_bundle": "not pem"}, "ca_bundle"),
        ({"transport": "stdio", "command": "x", "env": {"BAD-NAME": "1"}}, "env"),
        ({"url": "https://a.example.com", "auth_type": "basic", "credentials": {"username": "u"}}, "credentials"),
        (
            {"url": "https://a.example.com", "auth_type": "basic", "credentials": {"username": "a:b", "password": "p"}},
            "credentials",
        ),
        ({"url": "https://a.example.com", "auth_type": "bearer", "credentials": {"token": "a\nb"}}, "credentials"),
        ({"url": "https://a.example.com", "auth_type": "headers", "credentials": {"headers": {}}}, "credentials"),
        (
            {"url": "https://a.example.com", "auth_type": "headers", "credentials": {"headers": {"Bad Name": "v"}}},
            "credentials",
        ),
    ],
    ids=[
        "stdio-without-command",
        "stdio-with-url",
        "http-with-command",
        "http-without-url",
        "ftp-url",
        "ws-url-for-http",
        "http-url-for-websocket",
        "ca-bundle-not-pem",
        "env-bad-name",
        "basic-without-password",
        "basic-username-with-colon",
        "bearer-token-with-newline",
        "headers-empty",
        "headers-bad-name",
    ],
)
def test_gateway_with_invalid_settings_is_422_and_changes_nothing(staff_client, payload, field):
    """Gateway rules (transport vs url/command, URL scheme, PEM, credentials) answer 422 naming the field."""
    with catalog_unchanged():
        response = staff_client.post_json("/api/gateways?sync=false", {"name": "broken", **payload})
    assert response.status_code == 422, response.content
    assert field in response.json()["errors"]
    assert response.json()["detail"].startswith("Invalid gateway")


@pytest.mark.parametrize(
    "name", ["GitHub", "-leading-dash", "has space", "dots.not.allowed", "", "x" * 65, "ünï", "trailing-newline\n"]
)
def test_gateway_name_breaking_the_slug_rule_is_422(staff_client, name):
    """Gateway names are 1-64 lowercase letters, digits, '-' and '_', starting with a letter or digit."""
    gateway = GatewayFactory(name="kept")
    with catalog_unchanged():
        created = staff_client.post_json("/api/gateways?sync=false", {"name": name, "url": "https://a.example.com/mcp"})
        renamed = staff_client.patch_json(f"/api/gateways/{gateway.pk}", {"name": name})
    for response in (created, renamed):
        assert response.status_code == 422
        assert "name" in response.json()["errors"]


def test_gateway_name_of_64_characters_is_accepted(staff_client):
    """A 64-character slug is the longest gateway name."""
    response = staff_client.post_json(
        "/api/gateways?sync=false", {"name": "a" * 64, "url": "https://a.example.com/mcp"}
    )
    assert response.status_code == 201


def test_gateway_list_filters_by_transport_and_health(staff_client):
    """transport= and health= narrow the gateway list."""
    GatewayFactory(name="web", health=Health.HEALTHY)
    GatewayFactory(name="down", health=Health.UNREACHABLE)
    GatewayFactory(name="local", transport=Transport.STDIO, url="", command="run-me")
    by_transport = staff_client.get("/api/gateways", {"transport": "stdio"})
    assert keys(by_transport) == ["local"]
    assert keys(staff_client.get("/api/gateways", {"health": "unreachable"})) == ["down"]
    assert keys(staff_client.get("/api/gateways", {"health": "healthy"})) == ["web"]
    assert keys(staff_client.get("/api/gateways", {"transport": "streamable-http", "health": "unknown"})) == []


def test_gateway_era_is_a_setting_and_detected_era_is_reported(staff_client):
    """`era` is written like `transport` (auto by default); `detected_era` is read-only, null until
    federation has connected, and filters work on `era`."""
    response = staff_client.post_json("/api/gateways?sync=false", {"name": "m", "url": "https://a.example.com/mcp"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["era"], body["detected_era"]) == ("auto", None)
    changed = staff_client.patch_json(f"/api/gateways/{body['id']}", {"era": "modern"})
    assert changed.status_code == 200
    assert changed.json()["era"] == "modern"
    Gateway.objects.filter(pk=body["id"]).update(detected_era="modern", protocol_version="2026-07-28")
    read = staff_client.get(f"/api/gateways/{body['id']}").json()
    assert (read["era"], read["detected_era"], read["protocol_version"]) == ("modern", "modern", "2026-07-28")
    GatewayFactory(name="other")
    assert keys(staff_client.get("/api/gateways", {"era": "modern"})) == ["m"]
    assert keys(staff_client.get("/api/gateways", {"era": "auto"})) == ["other"]
    with catalog_unchanged():
        refused = staff_client.patch_json(f"/api/gateways/{body['id']}", {"detected_era": "legacy"})
        websocket = staff_client.post_json(
            "/api/gateways?sync=false",
            {"name": "ws", "transport": "websocket", "url": "wss://a.example.com/ws", "era": "modern"},
        )
        unknown = staff_client.post_json(
            "/api/gateways?sync=false", {"name": "x", "url": "https://a.example.com/mcp", "era": "future"}
        )
    assert refused.status_code == 422
    assert websocket.status_code == 422
    assert "era" in websocket.json()["errors"]
    assert unknown.status_code == 422


def test_the_openapi_schema_documents_the_era(staff_client):
    schemas = staff_client.get("/api/openapi.json").json()["components"]["schemas"]
    assert "era" in schemas["GatewayIn"]["properties"]
    assert "detected_era" in schemas["GatewayOut"]["properties"]
    assert "detected_era" not in schemas["GatewayIn"]["properties"]


def test_gateway_health_fields_are_not_writable(staff_client):
    """health is reported by federation, not set by callers: sending it is an unknown field (422)."""
    gateway = GatewayFactory()
    with catalog_unchanged():
        response = staff_client.patch_json(f"/api/gateways/{gateway.pk}", {"health": "healthy"})
    assert response.status_code == 422


def test_deleting_a_gateway_deletes_what_came_from_it(staff_client):
    """DELETE of a gateway takes its tools, resources, templates and prompts with it, and no others."""
    gateway = GatewayFactory(name="doomed")
    other = GatewayFactory(name="survivor")
    ToolFactory.create_batch(3, gateway=gateway)
    ResourceFactory(gateway=gateway, text=None)
    ResourceTemplateFactory(gateway=gateway)
    PromptFactory(gateway=gateway, template="")
    kept = ToolFactory(gateway=other)
    server = VirtualServerFactory()
    server.tools.set([kept, *Tool.objects.filter(gateway=gateway)])

    response = staff_client.delete(f"/api/gateways/{gateway.pk}")

    assert response.status_code == 204
    assert not Gateway.objects.filter(name="doomed").exists()
    assert list(Tool.objects.all()) == [kept]
    assert not Resource.objects.filter(gateway_id=gateway.pk).exists()
    assert not ResourceTemplate.objects.filter(gateway_id=gateway.pk).exists()
    assert not Prompt.objects.filter(gateway_id=gateway.pk).exists()
    assert staff_client.get(f"/api/servers/{server.pk}").json()["tools"] == [kept.name]


# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------


def test_tool_create_stores_every_field(staff_client):
    """A tool created with every field reads back with the same values; the gateway is named."""
    GatewayFactory(name="math")
    payload = {
        "name": "math.add",
        "title": "Add",
        "description": "Adds two numbers.",
        "input_schema": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
        "output_schema": {"type": "object", "properties": {"sum": {"type": "number"}}},
        "annotations": {"readOnlyHint": True, "title": "Adder", "custom": {"x": 1}},
        "tags": ["math", "arith"],
        "enabled": False,
        "timeout": 2.5,
        "rate_limit": "5/minute",
        "integration_type": "mcp",
        "gateway": "math",
        "original_name": "add",
        "backend_config": {},
    }
    response = staff_client.post_json("/api/tools", payload)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body == {
        **payload,
        "tags": ["arith", "math"],
        "has_credentials": False,
        "description_override": "",
        "drift_pending": False,
        "drift_detected_at": None,
        "id": body["id"],
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
    }
    assert staff_client.get(f"/api/tools/{body['id']}").json() == body


def test_tool_create_uses_defaults_for_fields_left_out(staff_client):
    """A minimal tool gets an empty object input schema, no tags, enabled, and no timeout."""
    GatewayFactory(name="math")
    body = staff_client.post_json("/api/tools", {"name": "t", "gateway": "math"}).json()
    assert body["input_schema"] == {"type": "object", "properties": {}}
    assert (body["output_schema"], body["tags"], body["enabled"], body["timeout"]) == (None, [], True, None)
    assert body["integration_type"] == "mcp"


def test_tool_tags_are_trimmed_deduplicated_and_sorted(staff_client):
    """Tags are stored trimmed, without duplicates, in order."""
    tool = ToolFactory()
    response = staff_client.patch_json(f"/api/tools/{tool.pk}", {"tags": [" zeta ", "alpha", "zeta", "alpha "]})
    assert response.json()["tags"] == ["alpha", "zeta"]


def test_rest_tool_needs_no_gateway(staff_client):
    """A non-MCP tool has no gateway (null in the response) and may carry a backend configuration."""
    payload = {"name": "weather", "integration_type": "rest", "backend_config": {"url": "https://api.example.com"}}
    response = staff_client.post_json("/api/tools", payload)
    assert response.status_code == 201, response.content
    assert response.json()["gateway"] is None
    assert response.json()["backend_config"]["url"] == "https://api.example.com"  # stored normalised


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"integration_type": "mcp"}, "gateway"),
        ({"integration_type": "rest", "gateway": "math"}, "gateway"),
        ({"gateway": "math", "backend_config": {"url": "x"}}, "backend_config"),
        ({"gateway": "no-such-gateway"}, "gateway"),
        ({"gateway": "math", "timeout": 0}, "timeout"),
        ({"gateway": "math", "annotations": {"readOnlyHint": "yes"}}, "annotations"),
        ({"gateway": "math", "tags": ["x" * 65]}, "tags"),
    ],
    ids=[
        "mcp-without-gateway",
        "rest-with-gateway",
        "mcp-with-backend-config",
        "unknown-gateway",
        "zero-timeout",
        "annotation-hint-not-boolean",
        "tag-too-long",
    ],
)
def test_tool_breaking_a_rule_is_422_and_changes_nothing(staff_client, payload, field):
    """A tool that breaks a catalog rule answers 422 naming the field; nothing is stored."""
    GatewayFactory(name="math")
    with catalog_unchanged():
        response = staff_client.post_json("/api/tools", {"name": "t", **payload})
    assert response.status_code == 422, response.content
    assert field in response.json()["errors"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", 123),
        ("tags", "math"),
        ("tags", [1, 2]),
        ("timeout", "fast"),
        ("input_schema", ["type", "object"]),
        ("input_schema", "object"),
        ("annotations", []),
        ("integration_type", "carrier-pigeon"),
        ("gateway", 7),
    ],
)
def test_tool_with_a_wrong_type_is_422(staff_client, field, value):
    """A tool field of the wrong JSON type (or an unknown choice) answers 422 naming it."""
    GatewayFactory(name="math")
    with catalog_unchanged():
        response = staff_client.post_json("/api/tools", {"name": "t", "gateway": "math", field: value})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"].split(".")[0] == field


@pytest.mark.parametrize("name", ["a", "A-z_0.9", "x" * 128, "ns.tool-name_v2"])
def test_tool_names_following_the_rule_are_accepted(staff_client, name):
    """Tool names of 1-128 letters, digits, '_', '-' and '.' are accepted."""
    GatewayFactory(name="math")
    response = staff_client.post_json("/api/tools", {"name": name, "gateway": "math"})
    assert response.status_code == 201, response.content
    assert response.json()["name"] == name


@pytest.mark.parametrize(
    "name", ["", "has space", "x" * 129, "slash/name", "naïve", "colon:name", "tab\tname", "trailing-newline\n"]
)
def test_tool_name_breaking_the_rule_is_422(staff_client, name):
    """Tool names outside 1-128 of [A-Za-z0-9_.-] answer 422 on create and rename; nothing changes."""
    GatewayFactory(name="math")
    tool = ToolFactory(name="kept")
    with catalog_unchanged():
        created = staff_client.post_json("/api/tools", {"name": name, "gateway": "math"})
        renamed = staff_client.patch_json(f"/api/tools/{tool.pk}", {"name": name})
    for response in (created, renamed):
        assert response.status_code == 422
        assert "name" in response.json()["errors"]


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "nope"}}},
        {"type": "object", "required": "a"},
        {"type": "array", "items": {"type": "string"}},
        {"type": "string"},
        {"properties": {}},
    ],
    ids=["unknown-type", "required-not-a-list", "array-root", "string-root", "no-root-type"],
)
@pytest.mark.parametrize("field", ["input_schema", "output_schema"])
def test_tool_with_an_invalid_json_schema_is_422(staff_client, schema, field):
    """An input or output schema that is not valid JSON Schema, or whose root is not an object, answers 422."""
    GatewayFactory(name="math")
    tool = ToolFactory(name="kept")
    with catalog_unchanged():
        created = staff_client.post_json("/api/tools", {"name": "t", "gateway": "math", field: schema})
        patched = staff_client.patch_json(f"/api/tools/{tool.pk}", {field: schema})
    for response in (created, patched):
        assert response.status_code == 422, response.content
        assert field in response.json()["errors"]
        assert "schema" in response.json()["detail"].lower()


def test_tool_invalid_schema_message_says_where(staff_client):
    """The 422 for a bad schema points at the part of the schema that is wrong."""
    GatewayFactory(name="math")
    schema = {"type": "object", "properties": {"a": {"type": "nope"}}}
    with catalog_unchanged():
        response = staff_client.post_json("/api/tools", {"name": "t", "gateway": "math", "input_schema": schema})
    assert response.status_code == 422
    assert "Not a valid JSON Schema" in response.json()["detail"]
    assert "properties/a/type" in response.json()["detail"]


def test_tool_put_replaces_every_field(staff_client):
    """PUT of a tool resets the fields left out of the body to their defaults."""
    tool = ToolFactory(
        title="Old",
        tags=["x"],
        timeout=5.0,
        annotations={"readOnlyHint": True},
        integration_type="rest",
        gateway=None,
        backend_config=ECHO_REST,
    )
    body = {"name": tool.name, "integration_type": "rest", "backend_config": ECHO_REST}
    response = staff_client.put_json(f"/api/tools/{tool.pk}", body)
    assert response.status_code == 200
    body = response.json()
    assert (body["title"], body["tags"], body["timeout"], body["annotations"]) == ("", [], None, {})
    assert body["input_schema"] == {"type": "object", "properties": {}}


def test_tool_put_without_a_gateway_is_422_for_an_mcp_tool(staff_client):
    """PUT is a replacement, so leaving out the gateway of an MCP tool answers 422 and changes nothing."""
    tool = ToolFactory()
    with catalog_unchanged():
        response = staff_client.put_json(f"/api/tools/{tool.pk}", {"name": tool.name})
    assert response.status_code == 422
    assert "gateway" in response.json()["errors"]


def test_tool_patch_may_set_nullable_fields_to_null(staff_client):
    """PATCH with null for a nullable field (timeout, output_schema) clears it."""
    tool = ToolFactory(
        timeout=3.0,
        output_schema={"type": "object"},
        integration_type="function",
        gateway=None,
        backend_config=ADD_FUNCTION,
    )
    response = staff_client.patch_json(f"/api/tools/{tool.pk}", {"timeout": None, "output_schema": None})
    assert response.status_code == 200
    tool.refresh_from_db()
    assert (tool.timeout, tool.output_schema) == (None, None)


def test_tool_patch_moves_it_to_another_gateway(staff_client):
    """PATCH gateway=<name> moves a tool to that gateway."""
    tool = ToolFactory()
    GatewayFactory(name="elsewhere")
    response = staff_client.patch_json(f"/api/tools/{tool.pk}", {"gateway": "elsewhere"})
    assert response.json()["gateway"] == "elsewhere"
    tool.refresh_from_db()
    assert tool.gateway.name == "elsewhere"


def test_tool_list_filters_by_tag(staff_client):
    """tag=<t> lists tools that carry exactly that tag, not tags that merely contain it."""
    ToolFactory(name="a", tags=["math", "fast"])
    ToolFactory(name="b", tags=["mathematics"])
    ToolFactory(name="c", tags=[])
    assert keys(staff_client.get("/api/tools", {"tag": "math"})) == ["a"]
    assert keys(staff_client.get("/api/tools", {"tag": "fast"})) == ["a"]
    assert keys(staff_client.get("/api/tools", {"tag": "slow"})) == []


def test_tool_list_filters_by_integration_type(staff_client):
    """integration_type=<kind> lists tools with that backend only."""
    ToolFactory(name="upstream")
    ToolFactory(name="wrapped", integration_type=IntegrationType.REST, gateway=None)
    assert keys(staff_client.get("/api/tools", {"integration_type": "rest"})) == ["wrapped"]
    assert keys(staff_client.get("/api/tools", {"integration_type": "mcp"})) == ["upstream"]


def test_tool_list_combines_filters(staff_client):
    """Several filters together narrow the list to entries matching all of them."""
    gateway = GatewayFactory(name="g")
    ToolFactory(name="match", gateway=gateway, tags=["t"], description="needle")
    ToolFactory(name="wrong-tag", gateway=gateway, tags=["u"], description="needle")
    ToolFactory(name="other-gw", tags=["t"], description="needle")
    ToolFactory(name="disabled", gateway=gateway, tags=["t"], description="needle", enabled=False)
    response = staff_client.get("/api/tools", {"gateway": "g", "tag": "t", "q": "NEEDLE", "enabled": "true"})
    assert keys(response) == ["match"]
    assert response.json()["count"] == 1


# ---------------------------------------------------------------------------------------------
# Resources and resource templates
# ---------------------------------------------------------------------------------------------


def test_resource_with_text_content(staff_client):
    """A resource with text content reads back with the text and no blob."""
    payload = {"uri": "file:///readme.md", "name": "readme", "mime_type": "text/markdown", "text": "# Hi"}
    response = staff_client.post_json("/api/resources", payload)
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["text"], body["blob"], body["gateway"]) == ("# Hi", None, None)


def test_resource_with_empty_text_differs_from_no_text(staff_client):
    """Empty text is content (stored as ""), not the absence of content."""
    response = staff_client.post_json("/api/resources", {"uri": "file:///empty", "name": "empty", "text": ""})
    assert response.status_code == 201
    assert response.json()["text"] == ""
    assert Resource.objects.get(uri="file:///empty").text == ""


def test_resource_blob_round_trips_as_base64(staff_client):
    """Binary content is sent and returned as base64 and stored as bytes."""
    raw = bytes(range(256))
    encoded = base64.b64encode(raw).decode()
    response = staff_client.post_json("/api/resources", {"uri": "file:///logo.png", "name": "logo", "blob": encoded})
    assert response.status_code == 201, response.content
    assert response.json()["blob"] == encoded
    assert response.json()["text"] is None
    assert bytes(Resource.objects.get(uri="file:///logo.png").blob) == raw


def test_resource_from_a_gateway(staff_client):
    """A resource may come from a gateway instead of carrying content."""
    GatewayFactory(name="files")
    response = staff_client.post_json("/api/resources", {"uri": "file:///remote", "name": "r", "gateway": "files"})
    assert response.status_code == 201, response.content
    assert response.json()["gateway"] == "files"


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"uri": "file:///x", "name": "x"}, 422),
        ({"uri": "file:///x", "name": "x", "text": "a", "blob": "aGk="}, 422),
        ({"uri": "file:///x", "name": "x", "text": "a", "gateway": "files"}, 422),
        ({"uri": "file:///x", "name": "x", "blob": "not base64!"}, 422),
        ({"uri": "not a uri", "name": "x", "text": "a"}, 422),
        ({"uri": "no-scheme/path", "name": "x", "text": "a"}, 422),
        ({"uri": "file:///x", "name": "", "text": "a"}, 422),
        ({"uri": "file:///x", "name": "x", "text": "a", "annotations": []}, 422),
    ],
    ids=[
        "no-source",
        "text-and-blob",
        "text-and-gateway",
        "blob-not-base64",
        "uri-with-spaces",
        "uri-without-scheme",
        "empty-name",
        "annotations-not-object",
    ],
)
def test_resource_breaking_a_rule_is_422_and_changes_nothing(staff_client, payload, status):
    """A resource needs exactly one source, a valid absolute URI, a name and base64 blobs; otherwise 422."""
    GatewayFactory(name="files")
    with catalog_unchanged():
        response = staff_client.post_json("/api/resources", payload)
    assert response.status_code == status, response.content
    assert response.json()["detail"]


def test_resource_patch_switches_from_text_to_blob(staff_client):
    """PATCH may replace text content by binary content when it clears the text in the same body."""
    resource = ResourceFactory(text="hello")
    response = staff_client.patch_json(f"/api/resources/{resource.pk}", {"text": None, "blob": "aGk="})
    assert response.status_code == 200, response.content
    resource.refresh_from_db()
    assert (resource.text, bytes(resource.blob)) == (None, b"hi")


def test_resource_patch_adding_a_second_source_is_422(staff_client):
    """PATCH that would give a text resource a blob as well answers 422 and changes nothing."""
    resource = ResourceFactory(text="hello")
    with catalog_unchanged():
        response = staff_client.patch_json(f"/api/resources/{resource.pk}", {"blob": "aGk="})
    assert response.status_code == 422
    assert "exactly one source" in response.json()["detail"]


def test_resource_template_create_and_read(staff_client):
    """A resource template stores its RFC 6570 template and its gateway."""
    GatewayFactory(name="logs")
    payload = {"uri_template": "file:///logs/{date}/{level}.txt", "name": "logs", "gateway": "logs"}
    response = staff_client.post_json("/api/resource-templates", payload)
    assert response.status_code == 201, response.content
    body = staff_client.get(f"/api/resource-templates/{response.json()['id']}").json()
    assert (body["uri_template"], body["gateway"], body["mime_type"]) == (payload["uri_template"], "logs", "")


@pytest.mark.parametrize(
    "uri_template",
    ["file:///logs/today.txt", "file:///logs/{date", "file:///logs/{da te}", "no-scheme/{x}", "{x}", ""],
)
def test_resource_template_that_is_not_a_uri_template_is_422(staff_client, uri_template):
    """A template without a variable, with a broken expression, or without a scheme answers 422."""
    with catalog_unchanged():
        response = staff_client.post_json("/api/resource-templates", {"uri_template": uri_template, "name": "t"})
    assert response.status_code == 422
    assert "uri_template" in response.json()["errors"]


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------


def test_prompt_create_with_arguments(staff_client):
    """A local prompt stores its template and arguments; argument keys not sent are left out."""
    payload = {
        "name": "summarise",
        "template": "Summarise {{ text }} in {{ words }} words.",
        "arguments": [{"name": "text", "required": True, "description": "What to summarise"}, {"name": "words"}],
    }
    response = staff_client.post_json("/api/prompts", payload)
    assert response.status_code == 201, response.content
    assert response.json()["arguments"] == payload["arguments"]
    assert Prompt.objects.get(name="summarise").arguments == payload["arguments"]


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"template": ""}, 422),
        ({"template": "{% if %}"}, 422),
        ({"template": "{{ x }", "arguments": []}, 422),
        ({"template": "hi", "arguments": [{"name": "a"}, {"name": "a"}]}, 422),
        ({"template": "hi", "arguments": [{"name": "a", "colour": "red"}]}, 422),
        ({"template": "hi", "arguments": [{"name": "a", "required": "sometimes"}]}, 422),
        ({"template": "hi", "arguments": [{"description": "no name"}]}, 422),
        ({"template": "hi", "gateway": "upstream"}, 422),
        ({"template": "hi", "arguments": "topic"}, 422),
    ],
    ids=[
        "local-without-template",
        "template-syntax-error",
        "template-unclosed-variable",
        "duplicate-argument",
        "unknown-argument-key",
        "required-not-boolean",
        "argument-without-name",
        "upstream-with-template",
        "arguments-not-a-list",
    ],
)
def test_prompt_breaking_a_rule_is_422_and_changes_nothing(staff_client, payload, status):
    """A prompt with a bad template or bad arguments answers 422; nothing is stored."""
    GatewayFactory(name="upstream")
    with catalog_unchanged():
        response = staff_client.post_json("/api/prompts", {"name": "p", **payload})
    assert response.status_code == status, response.content
    assert response.json()["detail"]


def test_prompt_from_a_gateway_has_no_template(staff_client):
    """An upstream prompt is stored without a template."""
    GatewayFactory(name="upstream")
    response = staff_client.post_json("/api/prompts", {"name": "remote", "gateway": "upstream"})
    assert response.status_code == 201, response.content
    assert (response.json()["template"], response.json()["gateway"]) == ("", "upstream")


def test_prompt_name_breaking_the_rule_is_422(staff_client):
    """Prompt names follow the tool-name rule."""
    with catalog_unchanged():
        response = staff_client.post_json("/api/prompts", {"name": "two words", "template": "x"})
    assert response.status_code == 422
    assert "name" in response.json()["errors"]


# ---------------------------------------------------------------------------------------------
# Virtual servers
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def members(db):
    """One entry of each member kind, with known natural keys."""
    return {
        "tools": [ToolFactory(name="b.tool"), ToolFactory(name="a.tool")],
        "resources": [ResourceFactory(uri="file:///a.txt")],
        "resource_templates": [ResourceTemplateFactory(uri_template="file:///t/{x}")],
        "prompts": [PromptFactory(name="greet")],
    }


def test_server_create_takes_members_by_natural_key(staff_client, members):
    """Members are given by tool name, resource URI, URI template and prompt name, and read back sorted."""
    payload = {
        "name": "dev-tools",
        "title": "Dev",
        "icon": "https://example.com/icon.png",
        "tools": ["b.tool", "a.tool"],
        "resources": ["file:///a.txt"],
        "resource_templates": ["file:///t/{x}"],
        "prompts": ["greet"],
    }
    response = staff_client.post_json("/api/servers", payload)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["tools"] == ["a.tool", "b.tool"]
    assert (body["resources"], body["resource_templates"], body["prompts"]) == (
        ["file:///a.txt"],
        ["file:///t/{x}"],
        ["greet"],
    )
    server = VirtualServer.objects.get(name="dev-tools")
    assert set(server.tools.values_list("name", flat=True)) == {"a.tool", "b.tool"}
    assert staff_client.get(f"/api/servers/{server.pk}").json() == body


def test_server_members_listed_twice_are_stored_once(staff_client, members):
    """A member named twice in the body is a member once."""
    response = staff_client.post_json("/api/servers", {"name": "s", "tools": ["a.tool", "a.tool"]})
    assert response.status_code == 201
    assert response.json()["tools"] == ["a.tool"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", "no.such.tool"),
        ("resources", "file:///missing.txt"),
        ("resource_templates", "file:///missing/{x}"),
        ("prompts", "no-such-prompt"),
    ],
)
def test_server_with_an_unknown_member_is_422_and_changes_nothing(staff_client, members, field, value):
    """A member key that matches no entry answers 422 naming the field and the key; nothing is stored."""
    server = VirtualServerFactory(name="existing")
    server.tools.set(members["tools"])
    known = {"tools": "a.tool", "resources": "file:///a.txt", "resource_templates": "file:///t/{x}", "prompts": "greet"}
    with catalog_unchanged():
        created = staff_client.post_json("/api/servers", {"name": "new", field: [known[field], value]})
        patched = staff_client.patch_json(f"/api/servers/{server.pk}", {field: [value]})
    for response in (created, patched):
        assert response.status_code == 422
        assert value in response.json()["detail"]
        assert field in response.json()["errors"]


def test_server_members_match_keys_exactly(staff_client, members):
    """Members are found by their exact key: another case is an unknown member."""
    with catalog_unchanged():
        response = staff_client.post_json("/api/servers", {"name": "s", "tools": ["A.TOOL"]})
    assert response.status_code == 422


def test_server_patch_replaces_only_the_member_lists_sent(staff_client, members):
    """PATCH tools=[...] replaces the tools and keeps the other member lists."""
    server = VirtualServerFactory()
    server.tools.set(members["tools"])
    server.prompts.set(members["prompts"])
    response = staff_client.patch_json(f"/api/servers/{server.pk}", {"tools": ["b.tool"]})
    assert response.status_code == 200
    assert response.json()["tools"] == ["b.tool"]
    assert response.json()["prompts"] == ["greet"]


def test_server_put_without_members_empties_them(staff_client, members):
    """PUT is a replacement: member lists left out become empty."""
    server = VirtualServerFactory()
    server.tools.set(members["tools"])
    server.resources.set(members["resources"])
    response = staff_client.put_json(f"/api/servers/{server.pk}", {"name": server.name})
    assert response.status_code == 200
    body = response.json()
    assert (body["tools"], body["resources"], body["resource_templates"], body["prompts"]) == ([], [], [], [])
    assert server.tools.count() == 0


def test_deleting_a_member_removes_it_from_servers(staff_client, members):
    """DELETE of a tool drops it from every server that had it; the server stays."""
    server = VirtualServerFactory()
    server.tools.set(members["tools"])
    tool = members["tools"][0]
    assert staff_client.delete(f"/api/tools/{tool.pk}").status_code == 204
    assert staff_client.get(f"/api/servers/{server.pk}").json()["tools"] == ["a.tool"]


def test_deleting_a_server_keeps_its_members(staff_client, members):
    """DELETE of a server removes the composition, not the tools, resources or prompts in it."""
    server = VirtualServerFactory()
    server.tools.set(members["tools"])
    assert staff_client.delete(f"/api/servers/{server.pk}").status_code == 204
    assert Tool.objects.count() == 2


@pytest.mark.parametrize("icon", ["javascript:alert(1)", "ftp://example.com/i.png", "icon.png"])
def test_server_icon_must_be_http_or_data_url(staff_client, icon):
    """An icon that is not an http(s): or data: URL answers 422."""
    with catalog_unchanged():
        response = staff_client.post_json("/api/servers", {"name": "s", "icon": icon})
    assert response.status_code == 422
    assert "icon" in response.json()["errors"]


def test_server_icon_may_be_a_data_url(staff_client):
    """A data: URL is an acceptable icon."""
    response = staff_client.post_json("/api/servers", {"name": "s", "icon": "data:image/png;base64,iVBORw0KGgo="})
    assert response.status_code == 201


@pytest.mark.parametrize("name", ["Dev", "dev tools", "dev.tools", "_x", "x" * 65, "dev\n"])
def test_server_name_breaking_the_slug_rule_is_422(staff_client, name):
    """Virtual server names are lowercase slugs of at most 64 characters."""
    with catalog_unchanged():
        response = staff_client.post_json("/api/servers", {"name": name})
    assert response.status_code == 422
    assert "name" in response.json()["errors"]


def test_server_members_must_be_a_list_of_strings(staff_client, members):
    """Members given as a string or as objects answer 422."""
    with catalog_unchanged():
        as_string = staff_client.post_json("/api/servers", {"name": "s", "tools": "a.tool"})
        as_objects = staff_client.post_json("/api/servers", {"name": "s", "tools": [{"name": "a.tool"}]})
    assert as_string.status_code == 422
    assert as_objects.status_code == 422


# ---------------------------------------------------------------------------------------------
# Catalog version
# ---------------------------------------------------------------------------------------------


def test_catalog_version_goes_up_after_each_successful_write(staff_client):
    """Create, replace, patch and delete each bump the catalog version by one."""
    GatewayFactory(name="math")
    start = catalog_version()
    created = staff_client.post_json("/api/tools", {"name": "t", "gateway": "math"})
    assert created.status_code == 201
    assert catalog_version() == start + 1
    pk = created.json()["id"]
    assert staff_client.put_json(f"/api/tools/{pk}", {"name": "t", "gateway": "math", "tags": ["t"]}).status_code == 200
    assert catalog_version() == start + 2
    assert staff_client.patch_json(f"/api/tools/{pk}", {"tags": ["u"]}).status_code == 200
    assert catalog_version() == start + 3
    assert staff_client.delete(f"/api/tools/{pk}").status_code == 204
    assert catalog_version() == start + 4


def test_catalog_version_does_not_move_on_failed_or_read_only_requests(staff_client, reader_client):
    """Reads and refused writes (400, 403, 404, 409, 413, 422) leave the catalog version alone."""
    tool = ToolFactory(name="taken")
    gateway = tool.gateway.name
    start = catalog_version()
    with catalog_unchanged():
        staff_client.get("/api/tools")
        staff_client.get(f"/api/tools/{tool.pk}")
        staff_client.get("/api/export")
        statuses = [
            staff_client.post("/api/tools", data="{", content_type="application/json").status_code,
            reader_client.post_json("/api/tools", {"name": "x", "gateway": gateway}).status_code,
            staff_client.patch_json("/api/tools/987654", {"title": "x"}).status_code,
            staff_client.post_json("/api/tools", {"name": "taken", "gateway": gateway}).status_code,
            staff_client.post_json("/api/tools", {"name": "bad name", "gateway": gateway}).status_code,
        ]
        with override_settings(GATEWAY_MAX_BODY_BYTES=1024, DATA_UPLOAD_MAX_MEMORY_SIZE=1024):
            too_big = staff_client.post_json("/api/tools", {"name": "x", "description": "y" * 2000})
        statuses.append(too_big.status_code)
    assert statuses == [400, 403, 404, 409, 422, 413]
    assert catalog_version() == start


def test_catalog_version_goes_up_after_an_import_that_changes_something(staff_client):
    """An import that creates entries bumps the version; a dry run and an identical re-import do not."""
    document = {"format": "mcp-gateway-catalog", "version": 1, "servers": [{"name": "imported"}]}
    start = catalog_version()
    dry = staff_client.post_json("/api/import?dry_run=true", document)
    assert dry.status_code == 200
    assert dry.json()["created"] == {"servers": ["imported"]}
    assert catalog_version() == start
    assert not VirtualServer.objects.filter(name="imported").exists()

    assert staff_client.post_json("/api/import", document).status_code == 200
    assert catalog_version() == start + 1
    again = staff_client.post_json("/api/import", document)
    assert again.json()["unchanged"] == {"servers": ["imported"]}
    assert catalog_version() == start + 1


# ---------------------------------------------------------------------------------------------
# Export and import over the API
# ---------------------------------------------------------------------------------------------


def test_export_then_import_recreates_the_catalog(staff_client, members):
    """A document from GET /api/export, imported into an emptied catalog, recreates every entry."""
    server = VirtualServerFactory(name="everything")
    server.tools.set(members["tools"])
    server.prompts.set(members["prompts"])
    document = staff_client.get("/api/export").json()
    assert document["format"] == "mcp-gateway-catalog"
    before = {kind: document[kind] for kind in ("gateways", "tools", "servers")}
    for model in CATALOG_MODELS:
        model.objects.all().delete()

    response = staff_client.post_json("/api/import", document)

    assert response.status_code == 200, response.content
    assert response.json()["created"]["servers"] == ["everything"]
    after = staff_client.get("/api/export").json()
    assert {kind: after[kind] for kind in before} == before


def test_import_of_something_that_is_not_an_export_is_422(staff_client):
    """A JSON body that is not a catalog export answers 422; nothing is imported."""
    with catalog_unchanged():
        response = staff_client.post_json("/api/import", {"tools": []})
    assert response.status_code == 422
    assert "Not a catalog export" in response.json()["detail"]


def test_import_of_malformed_json_is_400(staff_client):
    """POST /api/import with a body that is not JSON answers 400 like every other endpoint."""
    with catalog_unchanged():
        response = staff_client.post("/api/import", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Malformed JSON")


def test_import_with_one_invalid_entry_imports_nothing(staff_client):
    """Import is all or nothing: one invalid entry rejects the whole document."""
    document = {
        "format": "mcp-gateway-catalog",
        "version": 1,
        "servers": [{"name": "good"}, {"name": "Bad Name"}],
    }
    with catalog_unchanged():
        response = staff_client.post_json("/api/import", document)
    assert response.status_code == 422
    assert "servers[1]" in response.json()["detail"]


def test_reader_may_export_but_not_import_or_export_secrets(reader_client):
    """Export needs read; include_secrets and import need write (403)."""
    assert reader_client.get("/api/export").status_code == 200
    assert reader_client.get("/api/export", {"include_secrets": "true"}).status_code == 403
    document = {"format": "mcp-gateway-catalog", "version": 1, "servers": [{"name": "x"}]}
    with catalog_unchanged():
        assert reader_client.post_json("/api/import", document).status_code == 403


# ---------------------------------------------------------------------------------------------
# Query counts of list endpoints (no N+1)
# ---------------------------------------------------------------------------------------------
# Measured with a bearer token: authentication costs two queries (deny-list lookup, user), then one
# count and one page query (4 in all), plus one query per prefetched member kind for servers (8; 7
# for one server). Each limit below is the measured number plus one.


def test_listing_20_tools_takes_a_constant_number_of_queries(token_client, django_assert_max_num_queries):
    """Listing 20 tools from different gateways costs the same few queries as listing one."""
    for i in range(20):
        ToolFactory(name=f"tool.{i:02d}", gateway=GatewayFactory(name=f"gw-{i:02d}"))
    with django_assert_max_num_queries(5):
        response = token_client.get("/api/tools", {"limit": 50})
    assert response.status_code == 200
    assert len(response.json()["items"]) == 20
    assert {item["gateway"] for item in response.json()["items"]} == {f"gw-{i:02d}" for i in range(20)}


@pytest.mark.parametrize("prefix", ["gateways", "resources", "resource-templates", "prompts"])
def test_listing_other_entries_takes_a_constant_number_of_queries(token_client, django_assert_max_num_queries, prefix):
    """Listing 20 gateways, resources, templates or prompts does not query once per entry."""
    for i in range(20):
        gateway = GatewayFactory(name=f"gw-{i:02d}")
        if prefix == "resources":
            ResourceFactory(gateway=gateway, text=None)
        elif prefix == "resource-templates":
            ResourceTemplateFactory(gateway=gateway)
        elif prefix == "prompts":
            PromptFactory(gateway=gateway, template="")
    with django_assert_max_num_queries(5):
        response = token_client.get(f"/api/{prefix}", {"limit": 50})
    assert response.status_code == 200
    assert len(response.json()["items"]) == 20


def test_listing_5_servers_with_members_takes_a_constant_number_of_queries(token_client, django_assert_max_num_queries):
    """Listing 5 servers with 4 kinds of members each prefetches members once per kind, not per server."""
    for i in range(5):
        server = VirtualServerFactory(name=f"srv-{i}")
        server.tools.set(ToolFactory.create_batch(3))
        server.resources.set(ResourceFactory.create_batch(2))
        server.resource_templates.set(ResourceTemplateFactory.create_batch(2))
        server.prompts.set(PromptFactory.create_batch(2))
    with django_assert_max_num_queries(9):
        response = token_client.get("/api/servers")
    assert response.status_code == 200
    items = response.json()["items"]
    assert len(items) == 5
    assert all(len(item["tools"]) == 3 and len(item["prompts"]) == 2 for item in items)


def test_reading_one_server_with_members_takes_a_constant_number_of_queries(
    token_client, django_assert_max_num_queries
):
    """GET /api/servers/{id} loads each member kind in one query however many members there are."""
    server = VirtualServerFactory()
    server.tools.set(ToolFactory.create_batch(10))
    server.prompts.set(PromptFactory.create_batch(10))
    with django_assert_max_num_queries(8):
        response = token_client.get(f"/api/servers/{server.pk}")
    assert len(response.json()["tools"]) == 10


def test_response_bodies_are_json(staff_client):
    """Successful and failed responses are JSON documents."""
    ToolFactory()
    for response in (staff_client.get("/api/tools"), staff_client.get("/api/tools/987654")):
        assert response["Content-Type"].startswith("application/json")
        json.loads(response.content)
