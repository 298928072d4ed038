"""The definition rules of cli tools (docs/tool-backends.md "CLI").

The template rules are the backend's (``transports.protocol.backends.cli``, which the registry, a
layer below, cannot import): each element of ``args`` is literal text with ``{name}`` or ``{name*}``
placeholders (``{{`` and ``}}`` are literal braces), at most one ``{name*}`` per element, and every
placeholder names a property of the tool's input schema.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from registry.validators import ENV_NAME_RE

KEYS = ("command", "args", "env", "cwd", "max_output_bytes", "output")
OUTPUTS = ("text", "json")
_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
PLACEHOLDER_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)(\*?)")


def _refuse(message: str) -> ValidationError:
    return ValidationError({"backend_config": message})


def placeholders(element: str) -> list[tuple[str, bool]]:
    """The (name, spread) placeholders of one template element; ValueError naming what is malformed."""
    found: list[tuple[str, bool]] = []
    for match in _TOKEN_RE.finditer(element):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        inner = match.group(1)
        placeholder = PLACEHOLDER_RE.fullmatch(inner) if inner is not None else None
        if placeholder is None:
            raise ValueError(
                f"args element {element!r} has a malformed placeholder {token!r}: use {{name}} or {{name*}} "
                "with a name of letters, digits, '_', '.' and '-'; write a literal brace as {{{{ or }}}}."
            )
        found.append((placeholder.group(1), bool(placeholder.group(2))))
    if sum(1 for _, spread in found if spread) > 1:
        raise ValueError(f"args element {element!r} has more than one {{name*}} placeholder; it may spread one array.")
    return found


def _command(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _refuse('Give the program to run as "command": an absolute path, or a program name on PATH.')
    command = value.strip()
    if "\x00" in command:
        raise _refuse("The command must not contain a NUL character.")
    if "/" in command and not command.startswith("/"):
        raise _refuse(
            f"The command {command!r} is a relative path: give an absolute path, or a bare program name to look "
            "up on the gateway's PATH."
        )
    return command


def _args(value: Any, properties: dict[str, Any]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _refuse('"args" must be a list of strings, one per argument of the program.')
    unknown: list[str] = []
    for element in value:
        if "\x00" in element:
            raise _refuse(f"args element {element!r} contains a NUL character.")
        try:
            found = placeholders(element)
        except ValueError as exc:
            raise _refuse(str(exc)) from None
        for name, spread in found:
            if name not in properties:
                unknown.append(name)
                continue
            declared = properties[name].get("type") if isinstance(properties[name], dict) else None
            types = declared if isinstance(declared, list) else [declared]
            if spread and declared is not None and "array" not in types:
                raise _refuse(
                    f"{{{name}*}} passes one element per item of an array, but the input schema declares "
                    f"{name!r} as {declared!r}: declare it as an array, or use {{{name}}}."
                )
    if unknown:
        names = ", ".join(f"{{{name}}}" for name in dict.fromkeys(unknown))
        raise _refuse(
            f"args use {names}, which the input schema does not define: add such properties to the tool's input "
            "schema, or fix the placeholder names."
        )
    return value


def _env(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _refuse('"env" must be a list of variable names passed from the gateway\'s environment.')
    bad = [name for name in value if not ENV_NAME_RE.fullmatch(name)]
    if bad:
        raise _refuse(
            f"{', '.join(map(repr, bad))} {'is' if len(bad) == 1 else 'are'} not a variable name: use letters, "
            "digits and '_', not starting with a digit (only names: values come from the gateway's environment)."
        )
    return list(dict.fromkeys(value))


def _max_output_bytes(value: Any) -> int:
    bound = settings.GATEWAY_CLI_MAX_OUTPUT_BYTES
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _refuse(f'"max_output_bytes" must be a positive whole number of bytes (at most {bound}).')
    if value > bound:
        raise _refuse(f'"max_output_bytes" is {value}, above GATEWAY_CLI_MAX_OUTPUT_BYTES ({bound}): lower it.')
    return value


def clean(tool: Any) -> None:  # a registry.models.Tool (a layer above this one)
    """Check and normalise ``tool.backend_config``; ValidationError({"backend_config": ...}) when wrong."""
    config = tool.backend_config
    if not isinstance(config, dict):
        raise _refuse('Must be a JSON object like {"command": "/usr/bin/grep", "args": ["--", "{pattern}"]}.')
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise _refuse(f"Unknown key(s) {', '.join(map(repr, unknown))}: a CLI tool takes {', '.join(KEYS)}.")
    schema = tool.input_schema if isinstance(tool.input_schema, dict) else {}
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        properties = {}
    cleaned: dict[str, Any] = {
        "command": _command(config.get("command")),
        "args": _args(config.get("args", []), properties),
        "env": _env(config.get("env", [])),
    }
    cwd = config.get("cwd")
    if cwd not in (None, ""):
        if not isinstance(cwd, str) or not cwd.startswith("/") or "\x00" in cwd:
            raise _refuse(f'"cwd" must be an absolute path (starting with "/"); got {cwd!r}.')
        cleaned["cwd"] = cwd
    if config.get("max_output_bytes") is not None:
        cleaned["max_output_bytes"] = _max_output_bytes(config["max_output_bytes"])
    output = config.get("output", "text")
    if output not in OUTPUTS:
        raise _refuse(f'"output" must be "text" or "json"; got {output!r}.')
    cleaned["output"] = output
    tool.backend_config = cleaned
