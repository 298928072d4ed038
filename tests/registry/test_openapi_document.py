"""The OpenAPI document of /api/ tells the truth: every status an operation can answer is in its responses,
a PATCH body is nullable only where the full body is, parameters say what HTTP can carry, and the patterns
that state the validators' rules accept exactly what the validators accept (schemathesis then holds the
running API to the document: tests/registry/test_openapi_fuzz.py)."""

import re

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry import conf, schemas, validators

pytestmark = pytest.mark.django_db


@pytest.fixture
def document(staff_client):
    response = staff_client.get("/api/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(document):
    for path, items in document["paths"].items():
        for method, operation in items.items():
            yield f"{method.upper()} {path}", path, operation


def test_every_operation_documents_the_errors_it_can_answer(document):
    for label, path, operation in operations(document):
        statuses = set(operation["responses"])
        assert {"400", "401", "403", "422", "503"} <= statuses, label
        if "requestBody" in operation:
            assert {"413", "415"} <= statuses, label
        if "{pk}" in path:
            assert "404" in statuses, label
            (pk,) = [p for p in operation["parameters"] if p["name"] == "pk"]
            assert (pk["schema"]["minimum"], pk["schema"]["maximum"]) == (1, 2**63 - 1), label
        for status, response in operation["responses"].items():
            if status != "204":
                assert list(response["content"]) == ["application/json"], (label, status)


def test_no_parameter_is_nullable_a_query_string_has_no_null(document):
    for label, _, operation in operations(document):
        for parameter in operation.get("parameters", []):
            assert {"type": "null"} not in parameter["schema"].get("anyOf", []), (label, parameter["name"])
            assert parameter["schema"].get("type") != "null", (label, parameter["name"])


def test_a_patch_body_is_nullable_only_where_the_full_body_is(document):
    components = document["components"]["schemas"]
    for name, patch in components.items():
        if not name.endswith("Patch"):
            continue
        full = components[name.removesuffix("Patch")]
        assert "required" not in patch, name
        for field, schema in patch["properties"].items():
            nullable = {"type": "null"} in schema.get("anyOf", [])
            assert nullable == ({"type": "null"} in full["properties"][field].get("anyOf", [])), (name, field)
            assert "default" not in schema, (name, field)


def test_the_page_size_maximum_is_the_setting_when_the_document_is_made(staff_client):
    with override_settings(GATEWAY_MAX_PAGE_SIZE=7):
        document = staff_client.get("/api/openapi.json").json()
    (limit,) = [p for p in document["paths"]["/api/tools"]["get"]["parameters"] if p["name"] == "limit"]
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 7)


def test_field_rules_of_the_validators_are_in_the_document(document):
    components = document["components"]["schemas"]
    tool = components["ToolIn"]["properties"]
    assert tool["name"]["pattern"] == validators.TOOL_NAME_RE.pattern
    assert tool["rate_limit"]["pattern"] == validators.RATE_PATTERN
    assert tool["title"]["maxLength"] == 256
    assert tool["input_schema"]["properties"]["type"] == {"const": "object"}
    assert components["GatewayIn"]["properties"]["name"]["pattern"] == validators.SLUG_RE.pattern
    assert components["GatewayIn"]["properties"]["env"]["propertyNames"]["pattern"] == validators.ENV_NAME_RE.pattern
    assert components["ResourceTemplateIn"]["properties"]["uri_template"]["pattern"] == validators.URI_TEMPLATE_PATTERN
    assert components["ToolIn"]["additionalProperties"] is False


# -- each pattern accepts what its validator accepts -------------------------------------------------------


def _accepts(check, value):
    try:
        check(value)
    except (ValidationError, ValueError):
        return False
    return True


def _document_accepts(pattern, value):
    """As the document's readers (ECMA-262) match: no '$' before a final newline."""
    return re.search(pattern.removesuffix("$") + r"\Z" if pattern.endswith("$") else pattern, value) is not None


def _rule(annotation):
    return annotation.__metadata__[0].keywords


def _duration(value):
    """parse_duration, less the lifetime's own bound (a token must expire before the year 9999)."""
    try:
        if value:
            conf.parse_duration(value)
    except ValueError as exc:
        if "too long" not in str(exc):
            raise


RULES = {
    "tool name": (validators.TOOL_NAME_RE.pattern, validators.validate_tool_name),
    "slug": (validators.SLUG_RE.pattern, validators.validate_slug),
    "rate limit": (validators.RATE_PATTERN, validators.validate_rate_limit),
    "uri": (_rule(schemas.Uri)["pattern"], validators.validate_uri),
    "uri template": (validators.URI_TEMPLATE_PATTERN, validators.validate_uri_template),
    "duration": (schemas.DURATION_PATTERN, _duration),
    "http url": (
        _rule(schemas.HttpUrl)["anyOf"][1]["pattern"],
        lambda value: validators.validate_upstream_url(value, schemes=("http", "https")),
    ),
}


@pytest.mark.parametrize("rule", RULES)
def test_what_a_pattern_draws_its_validator_accepts(rule):
    pattern, check = RULES[rule]

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.from_regex(re.compile(pattern.removesuffix("$") + r"\Z"), fullmatch=True))
    def drawn(value):
        assert _accepts(check, value), value

    drawn()


@pytest.mark.parametrize("rule", [rule for rule in RULES if rule not in ("uri template", "http url")])
def test_a_validator_accepts_only_what_its_pattern_says(rule):
    """Exactly, for the rules whose pattern is exact (a URI template or http URL given in a form the document
    does not describe, "{scheme}://x" or a non-ASCII host, may still be accepted: the document is stricter)."""
    pattern, check = RULES[rule]

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.text(max_size=40), st.from_regex(r"\A[ 0-9a-zA-Z:/{}._-]{0,20}\Z")))
    def either(value):
        assert _accepts(check, value) == _document_accepts(pattern, value), value

    either()


def test_a_create_links_to_the_operations_on_what_it_created(document):
    """OpenAPI links: the id (name, jti) a create answers is the path parameter of the created entry's operations,
    so a client or a stateful fuzzer can follow them."""
    links = document["paths"]["/api/tools"]["post"]["responses"]["201"]["links"]
    assert links["get_entry"] == {"operationId": "tools_read", "parameters": {"pk": "$response.body#/id"}}
    assert links["post_call"] == {"operationId": "tools_call", "parameters": {"name": "$response.body#/name"}}
    revoke = document["paths"]["/api/tokens"]["post"]["responses"]["201"]["links"]["post_revoke"]
    assert revoke["parameters"] == {"jti": "$response.body#/jti"}
    gateway_links = document["paths"]["/api/gateways"]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in gateway_links.values()} >= {"gateways_check", "gateways_delete"}
