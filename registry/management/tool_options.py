"""The options the ``tool_*`` commands share: a tool's fields, JSON given inline or as ``@file``."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser

KINDS = ("rest", "cli", "function")


def json_option(flag: str, value: str | None) -> Any:
    """The JSON of an option: inline text, ``@path`` for a file's content, ``@-`` for stdin; None when not given."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        path = value[1:]
        try:
            if path == "-":
                text = sys.stdin.read()
            else:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
        except OSError as exc:
            raise CommandError(f"{flag}: cannot read {path}: {exc.strerror}.") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{flag} is not JSON: {exc}.") from None


def json_object_option(flag: str, value: str | None) -> dict[str, Any] | None:
    """Like ``json_option``, for a JSON object."""
    parsed = json_option(flag, value)
    if parsed is not None and not isinstance(parsed, dict):
        raise CommandError(f"{flag} must be a JSON object ({{...}}), not {type(parsed).__name__}.")
    return parsed


def add_tool_arguments(parser: CommandParser, *, kind_required: bool) -> None:
    """NAME and the options that set a wrapped tool's fields."""
    parser.add_argument("name", help="The tool's name.")
    parser.add_argument(
        "--kind", choices=KINDS, required=kind_required, help="The integration type: rest, cli or function."
    )
    parser.add_argument(
        "--config",
        required=kind_required,
        help="The definition (backend_config) as JSON, or @FILE (docs/tool-backends.md).",
    )
    parser.add_argument("--input-schema", help="The input schema as JSON, or @FILE (function tools derive it).")
    parser.add_argument(
        "--credentials",
        help='REST tools\' secrets as JSON, or @FILE, e.g. {"token": "..."}; {} clears them. Prefer @FILE: '
        "a command line is visible to other users of the machine.",
    )
    parser.add_argument("--title")
    parser.add_argument("--description")
    parser.add_argument("--timeout", type=float, help="Seconds for one call (default: GATEWAY_TOOL_TIMEOUT).")
    parser.add_argument("--server", help="Also add the tool to this virtual server.")


def tool_data(options: dict[str, Any]) -> dict[str, Any]:
    """The tool's fields from the options given, as the services take them."""
    data: dict[str, Any] = {}
    if options.get("kind"):
        data["integration_type"] = options["kind"]
    json_fields = (("--config", "config", "backend_config"), ("--input-schema", "input_schema", "input_schema"))
    for flag, option, field in json_fields:
        value = json_object_option(flag, options.get(option))
        if value is not None:
            data[field] = value
    credentials = json_object_option("--credentials", options.get("credentials"))
    if credentials is not None:
        data["credentials"] = credentials
    for key in ("title", "description", "timeout"):
        if options.get(key) is not None:
            data[key] = options[key]
    return data


def describe(tool: Any) -> str:
    """One line about a tool: its name, kind and, for a REST tool, whether it holds credentials."""
    secrets = " with credentials" if tool.has_credentials else ""
    return f"{tool.get_integration_type_display()} tool {tool.name!r}{secrets}"
