"""The definition rules of function tools (docs/tool-backends.md "Python function").

``backend_config`` is ``{"function": "package.module.name"}``. The function must be matched by the
``GATEWAY_FUNCTION_TOOLS`` setting (read when a tool is checked, never at import) before anything is
imported, and must then import as a function. When the tool has no input schema of its own (the
empty default), one is derived from the function's type hints with pydantic, with each parameter's
description taken from the docstring; a tool without a description gets the docstring's first
paragraph.

The backend (``transports.protocol.backends.function``) builds the same pydantic model of the
arguments to convert them at call time; the layers cannot share code (the registry is below the
transports, and the protocol core imports nothing of the registry), so the few lines that turn a
signature into fields exist on both sides and follow the same rules: a parameter annotated
``CallContext`` is the call's context, not an argument; ``*args`` is ignored; ``**kwargs`` lets
other arguments through.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Callable
from typing import Any, Literal

from django.conf import settings
from django.core.exceptions import ValidationError
from pydantic import ConfigDict, Field, TypeAdapter, create_model
from pydantic.errors import PydanticUserError
from pydantic.json_schema import PydanticJsonSchemaWarning

from registry import validators

KEYS = {"function"}
DOTTED_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")
EMPTY_SCHEMAS: list[Any] = [None, {}, {"type": "object"}, {"type": "object", "properties": {}}]


def _refuse(message: str, field: str = "backend_config") -> ValidationError:
    return ValidationError({field: message})


def allowed(path: str) -> bool:
    """Matched by GATEWAY_FUNCTION_TOOLS: listed exactly, or its module listed as ``module.*`` (public
    functions only)."""
    module, _, name = path.rpartition(".")
    return any(
        pattern == path or (pattern.endswith(".*") and pattern[:-2] == module and not name.startswith("_"))
        for pattern in settings.GATEWAY_FUNCTION_TOOLS
    )


def _import(path: str) -> Callable[..., Any]:
    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # whatever the module raises while importing is the person's to fix
        raise _refuse(f"The module {module_name!r} cannot be imported: {type(exc).__name__}: {exc}") from None
    function = getattr(module, name, None)
    if function is None:
        raise _refuse(f"The module {module_name!r} has no function {name!r}.")
    if isinstance(function, type) or not callable(function):
        raise _refuse(f"{path!r} is a {type(function).__name__}, not a function.")
    return function


def _is_call_context(annotation: Any) -> bool:
    return getattr(annotation, "__name__", None) == "CallContext" and str(
        getattr(annotation, "__module__", "")
    ).startswith("transports.protocol")


def derive_schema(function: Callable[..., Any], parameter_docs: dict[str, str]) -> dict[str, Any]:
    """The JSON schema of the function's arguments, from its type hints (pydantic) and docstring."""
    try:
        signature = inspect.signature(function, eval_str=True)
    except NameError as exc:
        raise ValueError(f"a type hint cannot be resolved ({exc}); import its type at module level") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"its signature cannot be read ({exc})") from None
    fields: dict[str, Any] = {}
    extra: Literal["allow", "forbid"] = "forbid"
    for index, parameter in enumerate(signature.parameters.values()):
        annotation = Any if parameter.annotation is inspect.Parameter.empty else parameter.annotation
        if _is_call_context(annotation) or parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            extra = "allow"
            continue
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[f"p{index}"] = (annotation, Field(default, alias=parameter.name))
    try:
        with warnings.catch_warnings():
            # A default with no JSON form is left out of the schema, which is what we want.
            warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
            model = create_model(f"{function.__name__}_arguments", __config__=ConfigDict(extra=extra), **fields)
            derived = model.model_json_schema(by_alias=True)
    except (PydanticUserError, TypeError, ValueError) as exc:  # PydanticSchemaGenerationError is a PydanticUserError
        raise ValueError(_culprit(signature) or str(exc).splitlines()[0]) from None
    properties = derived.get("properties", {})
    for name, schema in properties.items():
        schema.pop("title", None)
        if name in parameter_docs and "description" not in schema:
            schema["description"] = parameter_docs[name]
    schema = {"type": "object", "properties": properties}
    for key in ("required", "additionalProperties", "$defs"):
        if key in derived:
            schema[key] = derived[key]
    return schema


def _culprit(signature: inspect.Signature) -> str | None:
    """Which parameter's type has no JSON schema, for a message that points at it."""
    for parameter in signature.parameters.values():
        if parameter.annotation is inspect.Parameter.empty or _is_call_context(parameter.annotation):
            continue
        try:
            TypeAdapter(parameter.annotation).json_schema()
        except (PydanticUserError, TypeError, ValueError):
            return f"the type of parameter {parameter.name!r} ({parameter.annotation!r}) has no JSON schema"
    return None


# -- docstrings -----------------------------------------------------------------------------------

_GOOGLE_HEADER_RE = re.compile(r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments):$")
_GOOGLE_ENTRY_RE = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:(.*)$")
_NUMPY_ENTRY_RE = re.compile(r"^\*{0,2}(\w+)\s*(?::.*)?$")
_REST_PARAM_RE = re.compile(r"^:param\s+(?:[^:]*\s)?\*{0,2}(\w+)\s*:(.*)$")
_GOOGLE_SECTION_RE = re.compile(r"^[A-Z][A-Za-z ]*:$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _underlined(lines: list[str], index: int) -> bool:
    """A NumPy section header: a word on its own line, a line of dashes below it."""
    below = lines[index + 1].strip() if index + 1 < len(lines) else ""
    return bool(lines[index].strip()) and bool(below) and set(below) == {"-"}


def _entries(body: list[str], entry_re: re.Pattern[str]) -> dict[str, str]:
    """Entries that start at the body's outer indentation (matching ``entry_re``); deeper lines continue them."""
    params: dict[str, str] = {}
    outer = min((_indent(line) for line in body if line.strip()), default=0)
    current: str | None = None
    for line in body:
        match = entry_re.match(line.strip()) if _indent(line) == outer else None
        if match:
            current = match.group(1)
            params[current] = match.group(2).strip() if match.lastindex == 2 else ""
        elif current is not None and line.strip():
            params[current] = f"{params[current]} {line.strip()}".strip()
    return params


def _google(lines: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for index, line in enumerate(lines):
        if not _GOOGLE_HEADER_RE.match(line.strip()):
            continue
        body = []
        for following in lines[index + 1 :]:
            if following.strip() and _indent(following) <= _indent(line):
                break
            body.append(following)
        params.update(_entries(body, _GOOGLE_ENTRY_RE))
    return params


def _numpy(lines: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for index, line in enumerate(lines):
        if line.strip() not in ("Parameters", "Other Parameters") or not _underlined(lines, index):
            continue
        body = []
        for position in range(index + 2, len(lines)):
            if _underlined(lines, position):
                break
            body.append(lines[position])
        params.update(_entries(body, _NUMPY_ENTRY_RE))
    return params


def _rest(lines: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    current: str | None = None
    for line in lines:
        stripped = line.strip()
        match = _REST_PARAM_RE.match(stripped)
        if match:
            current = match.group(1)
            params[current] = match.group(2).strip()
        elif not stripped or stripped.startswith(":"):
            current = None
        elif current is not None:
            params[current] = f"{params[current]} {stripped}"
    return params


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(The first paragraph, {parameter: description}) of a Google, NumPy or reST style docstring."""
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or _GOOGLE_SECTION_RE.match(stripped) or stripped.startswith(":") or _underlined(lines, index):
            break
        summary.append(stripped)
    params = _numpy(lines) | _google(lines) | _rest(lines)
    return " ".join(summary), {name: text for name, text in params.items() if text}


# -- the rules ------------------------------------------------------------------------------------


def clean(tool: Any) -> None:  # a registry.models.Tool (a layer above this one)
    """Check and normalise ``tool.backend_config``; derive the input schema and description when missing."""
    config = tool.backend_config
    if not isinstance(config, dict):
        raise _refuse('Must be a JSON object: {"function": "package.module.function"}.')
    unknown = sorted(set(config) - KEYS)
    if unknown:
        raise _refuse(f"Unknown key(s) {', '.join(map(repr, unknown))}: a function tool takes only 'function'.")
    path = config.get("function")
    if not isinstance(path, str) or not path.strip():
        raise _refuse('Give the function to call as "function": "package.module.function".')
    path = path.strip()
    if not DOTTED_PATH_RE.fullmatch(path):
        raise _refuse(f"{path!r} is not a dotted path to a function (package.module.function).")
    if not allowed(path):  # checked before importing: nothing outside the allow-list is ever imported
        module = path.rpartition(".")[0]
        raise _refuse(
            f"The function {path!r} is not allowed: add it, or '{module}.*' for the public functions of its "
            "module, to the GATEWAY_FUNCTION_TOOLS setting."
        )
    function = _import(path)
    tool.backend_config = {"function": path}
    summary, parameter_docs = parse_docstring(inspect.getdoc(function))
    if tool.input_schema in EMPTY_SCHEMAS:
        try:
            schema = derive_schema(function, parameter_docs)
        except ValueError as exc:
            raise _refuse(
                f"No input schema can be derived from {path!r}: {exc}. Fix its type hints or give the tool "
                "an input schema.",
                "input_schema",
            ) from None
        validators.validate_object_schema(schema)
        tool.input_schema = schema
    if not (tool.description or "").strip() and summary:
        tool.description = summary
