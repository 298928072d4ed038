"""The URL template of an imported operation: the server URL (``servers[0]`` of the operation, its path
item or the document, with its variables' defaults; or the importer's ``base_url``) joined with the
path, whose ``{name}`` parameters become RFC 6570 expressions named after the tool's arguments."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin, urlsplit

from registry.exceptions import InvalidInput
from registry.openapi.document import mapping, pointer
from registry.validators import URI_TEMPLATE_RE

Path = tuple[str | int, ...]

_PATH_VARIABLE = re.compile(r"\{([^{}]+)\}")
# What RFC 6570 allows in a literal, and percent-escapes already made.
_LITERAL_OK = re.compile(r"[^\x00-\x20\"'%<>\\^`{|}\x7f]|%[0-9A-Fa-f]{2}")
_VARNAME_BAD = re.compile(r"[^A-Za-z0-9_]+")
# OpenAPI path styles as RFC 6570 operators: simple {x}, label {.x}, matrix {;x}.
STYLE_OPERATOR = {"simple": "", "label": ".", "matrix": ";"}


def server_url(
    data: dict[str, Any], path_item: dict[str, Any], operation: dict[str, Any], *, source: str, where: Path
) -> str:
    """The absolute http(s) base URL the operation is served from."""
    for owner, owner_path in ((operation, where), (path_item, where[:2]), (data, ())):
        servers = owner.get("servers")
        if isinstance(servers, list) and servers:
            return _absolute(_expand(servers[0], (*owner_path, "servers", 0)), source, (*owner_path, "servers", 0))
    return _absolute("/", source, ("servers",))


def _expand(server: Any, where: Path) -> str:
    if not isinstance(server, dict) or not isinstance(server.get("url"), str):
        raise InvalidInput(f"{pointer(where)}: a server needs a 'url'.")
    variables = mapping(server, "variables")

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        variable = variables.get(name)
        if not isinstance(variable, dict) or not isinstance(variable.get("default"), str):
            raise InvalidInput(f"{pointer(where)}: the server variable {{{name}}} has no default value.")
        return str(variable["default"])

    return _PATH_VARIABLE.sub(value, server["url"])


def _absolute(url: str, source: str, where: Path) -> str:
    if not urlsplit(url).scheme:
        if urlsplit(source).scheme not in ("http", "https"):
            raise InvalidInput(
                f"{pointer(where)}: the server URL {url!r} is relative and the document was not read from a URL; "
                "give a base URL (base_url / --base-url) such as https://api.example.com/v1."
            )
        url = urljoin(source, url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"{pointer(where)}: the server URL {url!r} is not an http(s) URL with a host.")
    return url


def base_override(base_url: str) -> str:
    """The importer's base URL, checked."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(
            f"The base URL {base_url!r} must be an http(s) URL with a host, e.g. https://api.example.com."
        )
    return base_url


def literal(text: str) -> str:
    """``text`` with every character a URI template literal cannot hold percent-encoded."""
    out: list[str] = []
    index = 0
    while index < len(text):
        match = _LITERAL_OK.match(text, index)
        if match:
            out.append(match.group(0))
            index = match.end()
        else:
            out.extend(f"%{byte:02X}" for byte in text[index].encode())
            index += 1
    return "".join(out)


def varname(name: str) -> str:
    """An argument name usable as an RFC 6570 variable ('user-id' -> 'user_id')."""
    return _VARNAME_BAD.sub("_", name).strip("_") or "value"


def path_names(path: str) -> list[str]:
    """The parameter names in an OpenAPI path template, in order."""
    return _PATH_VARIABLE.findall(path)


def url_template(base: str, path: str, expressions: dict[str, str], *, where: Path) -> str:
    """``base`` + ``path`` as one URI template; ``expressions`` maps a path parameter's name to its
    expression ('{id}', '{.id*}')."""
    pieces: list[str] = [literal(base.rstrip("/"))]
    last = 0
    for match in _PATH_VARIABLE.finditer(path):
        pieces.append(literal(path[last : match.start()]))
        pieces.append(expressions[match.group(1)])
        last = match.end()
    pieces.append(literal(path[last:]))
    template = "".join(pieces)
    if not URI_TEMPLATE_RE.fullmatch(template):
        raise InvalidInput(f"{pointer(where)}: cannot build a URL template from {base!r} and {path!r}.")
    return template
