"""The definition rules of CLI and Python-function tools (docs/tool-backends.md "CLI", "Python
function"): a bad definition is refused, wherever it is saved from, with a message a person can act
on, and nothing is stored; a good one is normalised, and a function tool without an input schema gets
one derived from its type hints and docstring.
"""

from __future__ import annotations

import sys

import pytest
from django.test import override_settings

from registry import services
from registry.choices import IntegrationType
from registry.exceptions import InvalidInput
from registry.models import Tool
from registry.tool_kinds.function import parse_docstring

SCHEMA = {
    "type": "object",
    "properties": {
        "pattern": {"type": "string"},
        "files": {"type": "array", "items": {"type": "string"}},
        "limit": {"type": "integer"},
    },
    "required": ["pattern"],
}


def _cli(backend_config: dict, **data) -> Tool:
    return services.entry_create(
        Tool,
        data={
            "name": "grep",
            "integration_type": IntegrationType.CLI,
            "input_schema": SCHEMA,
            "backend_config": backend_config,
            **data,
        },
    )


def _function(path: object, **data) -> Tool:
    return services.entry_create(
        Tool,
        data={"name": "fn", "integration_type": IntegrationType.FUNCTION, "backend_config": {"function": path}, **data},
    )


def _refused(create, *args, **data) -> str:
    """The message of the refusal; asserts that nothing was stored."""
    before = Tool.objects.count()
    with pytest.raises(InvalidInput) as refused:
        create(*args, **data)
    assert Tool.objects.count() == before
    return refused.value.message


# -- CLI --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_cli_definition_is_stored_normalised():
    """Defaults are filled in (no arguments, no variables, text output); the command is trimmed."""
    tool = _cli({"command": " /usr/bin/grep ", "args": ["-n", "--max-count={limit}", "--", "{pattern}", "{files*}"]})
    tool.refresh_from_db()
    assert tool.backend_config == {
        "command": "/usr/bin/grep",
        "args": ["-n", "--max-count={limit}", "--", "{pattern}", "{files*}"],
        "env": [],
        "output": "text",
    }
    tool = _cli(
        {"command": "jq", "args": ["{{.}}"], "env": ["LANG", "LANG"], "cwd": "/srv", "max_output_bytes": 4096},
        name="jq",
    )
    assert tool.backend_config == {
        "command": "jq",
        "args": ["{{.}}"],
        "env": ["LANG"],
        "cwd": "/srv",
        "max_output_bytes": 4096,
        "output": "text",
    }


BAD_CLI = [
    ({}, "command"),
    ({"command": ""}, "command"),
    ({"command": 42}, "command"),
    ({"command": "bin/grep"}, "relative path"),
    ({"command": "/bin/gr\x00ep"}, "NUL"),
    ({"command": "grep", "args": "-n {pattern}"}, '"args" must be a list of strings'),
    ({"command": "grep", "args": ["-n", 3]}, '"args" must be a list of strings'),
    ({"command": "grep", "args": ["{pattern"]}, "malformed placeholder '{'"),
    ({"command": "grep", "args": ["{}"]}, "malformed placeholder '{}'"),
    ({"command": "grep", "args": ["{pat tern}"]}, "malformed placeholder '{pat tern}'"),
    ({"command": "grep", "args": ["pattern}"]}, "malformed placeholder '}'"),
    ({"command": "grep", "args": ["{files*}{files*}"]}, "more than one {name*}"),
    ({"command": "grep", "args": ["{pattern}", "{colour}", "{size}"]}, "args use {colour}, {size}"),
    ({"command": "grep", "args": ["{pattern*}"]}, "declares 'pattern' as 'string'"),
    ({"command": "grep", "args": ["a\x00b"]}, "NUL"),
    ({"command": "grep", "env": "LANG"}, '"env" must be a list'),
    ({"command": "grep", "env": ["LANG", "BAD-NAME", "1X"]}, "'BAD-NAME', '1X' are not a variable name"),
    ({"command": "grep", "env": ["A=b"]}, "'A=b' is not a variable name"),
    ({"command": "grep", "cwd": "relative/dir"}, '"cwd" must be an absolute path'),
    ({"command": "grep", "cwd": 7}, '"cwd" must be an absolute path'),
    ({"command": "grep", "max_output_bytes": 0}, "positive whole number"),
    ({"command": "grep", "max_output_bytes": "1MB"}, "positive whole number"),
    ({"command": "grep", "max_output_bytes": True}, "positive whole number"),
    ({"command": "grep", "max_output_bytes": 10**12}, "above GATEWAY_CLI_MAX_OUTPUT_BYTES"),
    ({"command": "grep", "output": "xml"}, '"output" must be "text" or "json"'),
    ({"command": "grep", "shell": True}, "Unknown key(s) 'shell'"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("config", "message"), BAD_CLI)
def test_bad_cli_definitions_are_refused_with_a_message_and_nothing_is_stored(config, message):
    refused = _refused(_cli, config)
    assert refused.startswith("Invalid tool: backend_config: ")
    assert message in refused


@pytest.mark.django_db
def test_placeholders_must_name_properties_of_the_input_schema():
    """With the default empty schema, any placeholder is refused and the message says what to add."""
    refused = _refused(_cli, {"command": "grep", "args": ["--", "{pattern}"]}, input_schema={"type": "object"})
    assert "args use {pattern}, which the input schema does not define" in refused
    assert "add such properties to the tool's input schema" in refused


@pytest.mark.django_db
def test_a_cli_definition_is_checked_on_update_too():
    tool = _cli({"command": "grep", "args": ["--", "{pattern}"]})
    with pytest.raises(InvalidInput, match="relative path"):
        services.entry_update(tool, data={"backend_config": {"command": "./grep"}})
    tool.refresh_from_db()
    assert tool.backend_config["command"] == "grep"


# -- Python functions -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_function_not_allowed_is_refused_with_the_setting_to_change_and_nothing_is_stored():
    refused = _refused(_function, "os.system")
    assert "The function 'os.system' is not allowed" in refused
    assert "'os.*'" in refused
    assert "GATEWAY_FUNCTION_TOOLS" in refused


@pytest.mark.django_db
def test_a_disallowed_module_is_never_imported():
    """The allow-list is checked before any import: a module outside it is not loaded by the check."""
    sys.modules.pop("tests.fixtures.argv_echo", None)
    _refused(_function, "tests.fixtures.argv_echo.main")
    assert "tests.fixtures.argv_echo" not in sys.modules


@pytest.mark.django_db
def test_the_module_wildcard_allows_public_functions_only():
    assert "is not allowed" in _refused(_function, "tests.fixtures.functions._private")
    with override_settings(GATEWAY_FUNCTION_TOOLS=["tests.fixtures.functions._private"]):
        assert _function("tests.fixtures.functions._private").input_schema["required"] == ["x"]


@pytest.mark.django_db
def test_the_allow_list_is_read_when_a_tool_is_checked():
    """The setting is read at each check, not when the code was imported."""
    with override_settings(GATEWAY_FUNCTION_TOOLS=[]):
        assert "is not allowed" in _refused(_function, "tests.fixtures.functions.add")
    with override_settings(GATEWAY_FUNCTION_TOOLS=["tests.fixtures.functions.add"]):
        assert _function("tests.fixtures.functions.add").backend_config == {"function": "tests.fixtures.functions.add"}


BAD_FUNCTION = [
    ("", "Give the function to call"),
    (None, "Give the function to call"),
    ("convert", "not a dotted path"),
    ("tests.fixtures.functions.convert()", "not a dotted path"),
    ("tests.fixtures.functions.no_such", "has no function 'no_such'"),
    ("tests.fixtures.functions.NotAFunction", "is a type, not a function"),
    ("tests.fixtures.functions.NOT_CALLABLE", "is a int, not a function"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "message"), BAD_FUNCTION)
def test_bad_function_definitions_are_refused_with_a_message(path, message):
    assert message in _refused(_function, path)


@pytest.mark.django_db
def test_a_module_that_cannot_be_imported_is_refused_with_the_error():
    with override_settings(GATEWAY_FUNCTION_TOOLS=["tests.fixtures.missing_module.*"]):
        refused = _refused(_function, "tests.fixtures.missing_module.run")
    assert "The module 'tests.fixtures.missing_module' cannot be imported: ModuleNotFoundError" in refused


@pytest.mark.django_db
def test_unknown_keys_of_a_function_definition_are_refused():
    with pytest.raises(InvalidInput, match="Unknown key"):
        services.entry_create(
            Tool,
            data={
                "name": "fn",
                "integration_type": IntegrationType.FUNCTION,
                "backend_config": {"function": "tests.fixtures.functions.add", "args": []},
            },
        )


@pytest.mark.django_db
def test_a_parameter_type_without_a_json_schema_is_refused_naming_the_parameter():
    refused = _refused(_function, "tests.fixtures.functions.opaque")
    assert refused.startswith("Invalid tool: input_schema: No input schema can be derived")
    assert "parameter 'handle'" in refused
    assert "give the tool an input schema" in refused


@pytest.mark.django_db
def test_the_input_schema_is_derived_from_type_hints_and_the_docstring():
    """Google-style "Args:" descriptions, an enum in $defs, defaults, and required = no default; the
    tool's description is the docstring's first paragraph."""
    tool = _function("tests.fixtures.functions.convert")
    assert tool.description == "Convert an amount of money between currencies."
    assert tool.input_schema == {
        "type": "object",
        "properties": {
            "amount": {"type": "number", "description": "How much money, in the source currency."},
            "to": {"$ref": "#/$defs/Currency", "description": "The currency to convert to."},
            "source": {"$ref": "#/$defs/Currency", "default": "EUR", "description": "The currency the amount is in."},
            "places": {"type": "integer", "default": 2, "description": "Decimal places of the converted amount."},
        },
        "required": ["amount", "to"],
        "additionalProperties": False,
        "$defs": {"Currency": {"enum": ["EUR", "USD", "NOK"], "title": "Currency", "type": "string"}},
    }


@pytest.mark.django_db
def test_models_lists_and_optional_parameters_get_their_schemas():
    """NumPy-style parameter descriptions; a list of models refers to the model in $defs; Optional
    values accept null and are not required."""
    schema = _function("tests.fixtures.functions.total").input_schema
    assert schema["required"] == ["prices"]
    assert schema["properties"]["prices"]["items"] == {"$ref": "#/$defs/Money"}
    assert schema["properties"]["prices"]["description"] == "The prices to add up; each is converted to a Money model."
    assert {"type": "null"} in schema["properties"]["discount"]["anyOf"]
    assert schema["properties"]["discount"]["description"] == "A fraction taken off the total."
    assert set(schema["$defs"]) == {"Money", "Currency"}


@pytest.mark.django_db
def test_the_context_parameter_is_not_an_argument():
    schema = _function("tests.fixtures.functions.with_progress").input_schema
    assert list(schema["properties"]) == ["steps"]
    assert schema["properties"]["steps"]["description"] == "How many steps."


@pytest.mark.django_db
def test_a_schema_or_description_of_the_tool_is_kept():
    """Only the empty default schema is derived; a description given is not replaced."""
    own = {"type": "object", "properties": {"a": {"type": "integer", "description": "mine"}}}
    tool = _function("tests.fixtures.functions.add", input_schema=own, description="Adds.")
    assert tool.input_schema == own
    assert tool.description == "Adds."
    tool = services.entry_update(tool, data={"description": ""})
    assert tool.description == "Add two integers, asynchronously."
    assert tool.input_schema == own


def test_docstrings_in_each_common_style_give_parameter_descriptions():
    google = """Do it.

    Longer text.

    Args:
        name (str): The name,
            continued.
        *args: Ignored.
        count: How many.

    Returns:
        Something.
    """
    assert parse_docstring(google) == (
        "Do it.",
        {"name": "The name, continued.", "args": "Ignored.", "count": "How many."},
    )
    rest = """Do it
    in two lines.

    :param str name: The name.
    :param count: How
        many.
    :returns: something
    """
    assert parse_docstring(rest) == ("Do it in two lines.", {"name": "The name.", "count": "How many."})
    numpy = """Do it.

    Parameters
    ----------
    name : str
        The name.
    count : int, optional
        How many.

    Returns
    -------
    int
        Not a parameter.
    """
    assert parse_docstring(numpy) == ("Do it.", {"name": "The name.", "count": "How many."})
    assert parse_docstring(None) == ("", {})
    assert parse_docstring("Sum.\n\n    Arguments:\n        x: first") == ("Sum.", {"x": "first"})
