"""Reading an OpenAPI document: JSON or YAML within size bounds, plain JSON values only, version 3.0.x or
3.1.x, every ``$ref`` local to the document and pointing at something, then the structural check of
openapi-spec-validator (run only once the scan has proved that it has nothing to fetch)."""

from __future__ import annotations

import datetime
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from registry.exceptions import InvalidInput

MAX_DOCUMENT_BYTES = 5 * 1024 * 1024
MAX_NODES = 1_000_000  # after YAML aliases are expanded: a few anchors must not make a billion nodes
MAX_NESTING = 200
MAX_REF_CHAIN = 32  # a reference whose target is itself only a reference, and so on
SUPPORTED = {"3.0": re.compile(r"^3\.0\.\d+$"), "3.1": re.compile(r"^3\.1\.\d+$")}
# Keywords that move the base URI or resolve dynamically: a "#/..." reference under them would no
# longer mean "in this document", so the scan refuses them instead of trusting every resolver to agree.
BASE_CHANGING = ("$id", "$dynamicRef")
_ALIAS_KEYS = {"$ref", "summary", "description"}


def pointer(parts: tuple[str | int, ...] | list[str | int]) -> str:
    """'#/paths/~1users~1{id}/get' for ("paths", "/users/{id}", "get") (RFC 6901 in a URI fragment)."""
    return "#" + "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def mapping(value: Any, key: str) -> dict[str, Any]:
    """``value[key]`` when ``value`` is an object holding an object there, else {} (optional sections)."""
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, dict) else {}


@dataclass(frozen=True)
class OpenApiDocument:
    """A parsed, checked OpenAPI document: its data (plain JSON values) and version family."""

    data: dict[str, Any]
    version: str  # "3.0" or "3.1"
    openapi: str  # the document's own version string, e.g. "3.1.0"


def load(document: bytes | str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> OpenApiDocument:
    """Parse and check an OpenAPI 3.0/3.1 document; InvalidInput saying what is wrong and where."""
    raw = document.encode() if isinstance(document, str) else bytes(document)
    if len(raw) > max_bytes:
        raise InvalidInput(f"The OpenAPI document is {len(raw)} bytes; at most {max_bytes} bytes are accepted.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"The OpenAPI document is not UTF-8 text (byte {exc.start}).") from None
    data = _plain(_parse(text))
    if not isinstance(data, dict):
        raise InvalidInput("Not an OpenAPI document: the top level must be an object with an 'openapi' field.")
    version = _version(data)
    scan_references(data)
    _validate_structure(data, version)
    return OpenApiDocument(data=data, version=version, openapi=data["openapi"])


def _parse(text: str) -> Any:
    if not text.strip():
        raise InvalidInput("The OpenAPI document is empty.")
    try:
        if text.lstrip().startswith("{"):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidInput(
                    f"The OpenAPI document is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
                ) from None
        try:
            return yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            problem = exc.problem or exc.context or "cannot be read"
            raise InvalidInput(f"The OpenAPI document is not valid YAML: {problem}{where}.") from None
        except yaml.YAMLError as exc:
            raise InvalidInput(f"The OpenAPI document is not valid YAML: {exc}.") from None
    except RecursionError:
        raise InvalidInput(f"The OpenAPI document is nested too deeply (at most {MAX_NESTING} levels).") from None


def _plain(value: Any) -> Any:
    """The parsed value as JSON data: YAML's integer keys (``200:``) become strings, dates ISO text, sets
    lists; aliases are copied, within MAX_NODES and MAX_NESTING (a recursive alias is too deep)."""
    count = 0

    def convert(node: Any, path: tuple[str | int, ...]) -> Any:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            raise InvalidInput(f"The OpenAPI document has more than {MAX_NODES} values (YAML aliases included).")
        if len(path) > MAX_NESTING:
            raise InvalidInput(
                f"The OpenAPI document is nested more than {MAX_NESTING} levels deep at {pointer(path[:8])}/..."
            )
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, item in node.items():
                name = _key(key, path)
                out[name] = convert(item, (*path, name))
            return out
        if isinstance(node, list | tuple | set | frozenset):
            items = sorted(node, key=repr) if isinstance(node, set | frozenset) else node
            return [convert(item, (*path, index)) for index, item in enumerate(items)]
        if isinstance(node, datetime.date | datetime.datetime | datetime.time):
            return node.isoformat()
        if isinstance(node, float) and not math.isfinite(node):
            raise InvalidInput(f"{pointer(path)}: {node} is not a JSON number.")
        if node is None or isinstance(node, str | int | float | bool):
            return node
        raise InvalidInput(f"{pointer(path)}: a {type(node).__name__} value is not JSON data.")

    return convert(value, ())


def _key(key: Any, path: tuple[str | int, ...]) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        # YAML reads `yes:`, `on:` or `null:` as these; quoting the key keeps it a name.
        raise InvalidInput(f"{pointer(path)}: the key {key!r} is not text (quote it in YAML).")
    if isinstance(key, int | float | datetime.date):
        return key.isoformat() if isinstance(key, datetime.date) else str(key)
    raise InvalidInput(f"{pointer(path)}: a {type(key).__name__} key is not text.")


def _version(data: dict[str, Any]) -> str:
    if "openapi" not in data:
        if "swagger" in data:
            raise InvalidInput(
                f"This is a Swagger {data['swagger']} document; only OpenAPI 3.0 and 3.1 are imported "
                "(convert it to OpenAPI 3 first, e.g. with swagger2openapi)."
            )
        raise InvalidInput('Not an OpenAPI document: there is no \'openapi\' field (e.g. "openapi": "3.1.0").')
    value = data["openapi"]
    if not isinstance(value, str):
        raise InvalidInput(
            f"The 'openapi' field must be a version string such as \"3.1.0\", not the number {value!r} "
            "(in YAML, quote it)."
        )
    for family, pattern in SUPPORTED.items():
        if pattern.match(value):
            return family
    raise InvalidInput(f"OpenAPI version {value!r} is not supported; this gateway imports 3.0.x and 3.1.x documents.")


def scan_references(data: dict[str, Any]) -> None:
    """Refuse any ``$ref`` that is not a JSON pointer into this document (``#/...``) or that points at
    nothing, and any keyword that would change where references resolve. Nothing is ever fetched."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    checked: set[str] = set()
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if "$ref" in node and ref not in checked:
                _check_ref(data, ref, path)
                checked.add(ref)
            for keyword in BASE_CHANGING:
                if isinstance(node.get(keyword), str):
                    raise InvalidInput(
                        f"{pointer(path)}: '{keyword}' is not supported in imported documents (references "
                        f"would resolve against {node[keyword]!r}); remove it and use '#/...' references."
                    )
            stack.extend(reversed([(item, (*path, key)) for key, item in node.items()]))  # document order
        elif isinstance(node, list):
            stack.extend(reversed([(item, (*path, index)) for index, item in enumerate(node)]))


def _check_ref(data: dict[str, Any], ref: Any, path: tuple[str | int, ...]) -> None:
    where = pointer((*path, "$ref"))
    if not isinstance(ref, str):
        raise InvalidInput(f"{where}: a $ref must be a string like '#/components/schemas/Name'.")
    if not (ref == "#" or ref.startswith("#/")):
        kind = "a remote reference" if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", ref) else "a reference to another file"
        raise InvalidInput(
            f"{where}: {ref!r} is {kind}; only references inside the document ('#/...') are followed, "
            "nothing is fetched. Bundle the document into one file first."
        )
    chain = [ref]
    while True:
        try:
            target = resolve_pointer(data, chain[-1])
        except LookupError as exc:
            raise InvalidInput(f"{where}: {chain[-1]!r} points to nothing in the document ({exc}).") from None
        # A target that is itself only a reference (with at most a summary or description) continues the chain.
        if not (isinstance(target, dict) and isinstance(target.get("$ref"), str) and set(target) <= _ALIAS_KEYS):
            return
        if target["$ref"] in chain:
            raise InvalidInput(
                f"{where}: the references {' -> '.join([*chain, target['$ref']])} form a loop with no schema in it."
            )
        chain.append(target["$ref"])
        if len(chain) > MAX_REF_CHAIN:
            raise InvalidInput(
                f"{where}: more than {MAX_REF_CHAIN} references in a chain ({chain[0]} -> ... -> {chain[-1]}); "
                "point at the target directly."
            )


def split_pointer(ref: str) -> list[str]:
    """The reference tokens of '#/a/b~1c' (RFC 6901, percent-decoded as a URI fragment)."""
    from urllib.parse import unquote

    fragment = unquote(ref[1:])
    if not fragment:
        return []
    return [token.replace("~1", "/").replace("~0", "~") for token in fragment[1:].split("/")]


def resolve_pointer(data: Any, ref: str) -> Any:
    """The value at '#/...' in ``data``; LookupError naming the first missing token."""
    node = data
    for token in split_pointer(ref):
        if isinstance(node, dict):
            if token not in node:
                raise LookupError(f"no {token!r}")
            node = node[token]
        elif isinstance(node, list):
            if not token.isdigit() or int(token) >= len(node):
                raise LookupError(f"no item {token!r}")
            node = node[int(token)]
        else:
            raise LookupError(f"{token!r} is inside a {type(node).__name__}")
    return node


def _validate_structure(data: dict[str, Any], version: str) -> None:
    # Imported here: the validator's import is slow and only imports need it.
    from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

    cls = OpenAPIV30SpecValidator if version == "3.0" else OpenAPIV31SpecValidator
    try:
        error = next(iter(cls(data).iter_errors()), None)
    except RecursionError:
        raise InvalidInput("The OpenAPI document could not be checked: its references nest too deeply.") from None
    except Exception as exc:  # the validator's own failures (an unknown dialect...) are the document's fault
        raise InvalidInput(f"The OpenAPI document could not be checked: {exc}") from None
    if error is None:
        return
    path = list(getattr(error, "absolute_path", []) or [])
    where = pointer(path) if path else "#"
    message = str(getattr(error, "message", error)).splitlines()[0]
    if len(message) > 300:
        message = message[:300] + "..."
    raise InvalidInput(f"Not a valid OpenAPI {version} document at {where}: {message}")
