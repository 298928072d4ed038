"""The definition rules of rest tools (docs/tool-backends.md "REST"): every problem of a
``backend_config`` is reported in one ValidationError, each message naming the key and what to do;
a valid definition is stored normalised, with every default written out."""

from __future__ import annotations

import re
import ssl
from typing import Any
from urllib.parse import urlsplit

import jmespath
import jmespath.exceptions
import uritemplate
from django.conf import settings
from django.core.exceptions import ValidationError

from registry import validators
from registry.exceptions import SecretError

KEYS = (
    "url",
    "method",
    "headers",
    "params",
    "body",
    "auth",
    "retries",
    "verify_tls",
    "ca_bundle",
    "extract",
    "max_response_bytes",
    "openapi",  # where an OpenAPI import made the tool from (registry/openapi.py)
)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
PARAM_PLACES = ("path", "query", "header", "body")
ENCODINGS = ("json", "form", "raw")
MAX_RETRIES = 5
AUTH_FIELDS: dict[str, tuple[str, ...]] = {
    "none": (),
    "basic": (),
    "bearer": (),
    "api_key": ("in", "name"),
    "oauth2": ("token_url", "scopes", "audience", "client_auth"),
}
# The credentials each kind of authentication needs (Tool.set_credentials; encrypted at rest).
AUTH_SECRETS: dict[str, tuple[str, ...]] = {
    "basic": ("username", "password"),
    "bearer": ("token",),
    "api_key": ("key",),
    "oauth2": ("client_id", "client_secret"),
}
_SECRET_NAMES = frozenset({"username", "password", "token", "key", "api_key", "client_id", "client_secret", "secret"})

_VARNAME = r"(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2})+(?:\.(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2})+)*"
_VARSPEC = rf"{_VARNAME}(?::[1-9][0-9]{{0,3}}|\*)?"
_EXPRESSION_RE = re.compile(rf"[+#./;?&]?{_VARSPEC}(?:,{_VARSPEC})*")
_LITERAL_FORBIDDEN = frozenset(" \"'<>\\^`|")


def clean(tool: Any) -> None:  # a registry.models.Tool (a layer above this one)
    """Check and normalise ``tool.backend_config``; ValidationError({"backend_config": ...}) when wrong,
    ValidationError({"credentials": ...}) when the authentication's secrets are missing."""
    config = tool.backend_config
    if not isinstance(config, dict):
        return  # the field's own validator says it must be an object
    problems: list[str] = []
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        problems.append(f"Unknown keys {', '.join(map(repr, unknown))}; a REST tool takes {', '.join(KEYS)}.")
    url, variables = _url(config.get("url"), problems)
    method = _method(config.get("method", "GET"), problems)
    normalised: dict[str, Any] = {
        "url": url,
        "method": method,
        "headers": _headers(config.get("headers", {}), problems),
        "params": _params(config.get("params", {}), variables, problems),
        "body": _body(config.get("body", {}), problems),
        "auth": _auth(config.get("auth", {"type": "none"}), problems),
        "retries": _retries(config.get("retries", 2), problems),
        "verify_tls": _verify_tls(config.get("verify_tls", True), problems),
        "ca_bundle": _ca_bundle(config.get("ca_bundle", ""), problems),
        "extract": _extract(config.get("extract"), problems),
        "max_response_bytes": _max_response_bytes(config.get("max_response_bytes"), problems),
    }
    if "openapi" in config:
        if not isinstance(config["openapi"], dict):
            problems.append("openapi: must be an object (it records the OpenAPI operation the tool was made from).")
        normalised["openapi"] = config["openapi"]
    if problems:
        raise ValidationError({"backend_config": list(problems)})
    _check_credentials(tool, normalised["auth"])
    tool.backend_config = normalised


# -- url and method ------------------------------------------------------------------------------------


def template_problem(url: str) -> str | None:
    """What makes ``url`` not an RFC 6570 URI template, said with the place it happens; None if it is one."""
    start: int | None = None
    for index, char in enumerate(url):
        if char == "{":
            if start is not None:
                return f"the '{{' after {url[:index]!r} opens an expression inside another one"
            start = index
        elif char == "}":
            if start is None:
                return f"the '}}' after {url[:index]!r} closes no expression (a literal brace is written %7D)"
            expression = url[start + 1 : index]
            if not _EXPRESSION_RE.fullmatch(expression):
                return (
                    f"{{{expression}}} is not a valid expression: write {{name}}, {{+path}}, {{/segments*}}, "
                    "{?a,b} or {&c}, with names of letters, digits and '_'"
                )
            start = None
        elif start is None:
            if ord(char) < 0x21 or ord(char) > 0x7E or char in _LITERAL_FORBIDDEN:
                return f"the character {char!r} after {url[:index]!r} must be percent-encoded"
            if char == "%" and not re.fullmatch(r"%[0-9A-Fa-f]{2}", url[index : index + 3]):
                return f"the '%' after {url[:index]!r} does not start a percent-encoded byte like %20"
    if start is not None:
        return f"the '{{' after {url[:start]!r} is never closed"
    return None


def _url(value: Any, problems: list[str]) -> tuple[str, frozenset[str]]:
    example = "e.g. https://api.example.com/users/{user_id}{?page}"
    if not isinstance(value, str) or not value.strip():
        problems.append(f"url: a REST tool needs the URL template of its endpoint ({example}).")
        return "", frozenset()
    url = value.strip()
    problem = template_problem(url)
    if problem:
        problems.append(f"url: {url!r} is not an RFC 6570 URI template: {problem}.")
        return url, frozenset()
    template = uritemplate.URITemplate(url)
    variables = frozenset(template.variable_names)
    fixed = urlsplit(template.expand({}))
    samples = [urlsplit(template.expand(dict.fromkeys(variables, sample))) for sample in ("/x", "/y")]
    if fixed.scheme not in ("http", "https"):
        problems.append(f"url: {url!r} must start with http:// or https://.")
    elif not fixed.hostname:
        problems.append(f"url: {url!r} names no host (the scheme and host cannot come from variables).")
    elif any((s.scheme, s.netloc) != (fixed.scheme, fixed.netloc) for s in samples):
        problems.append(
            f"url: in {url!r} variables reach the scheme or host; the host must be fixed, variables may only "
            "fill the path and the query."
        )
    elif fixed.username is not None or fixed.password is not None:
        problems.append("url: must not hold a user name or password; use auth and the tool's credentials.")
    else:
        try:
            fixed.port  # noqa: B018 - raises on a port that is not a number in range
        except ValueError:
            problems.append(f"url: {url!r} has an invalid port.")
    return url, variables


def _method(value: Any, problems: list[str]) -> str:
    method = value.upper() if isinstance(value, str) else ""
    if method not in METHODS:
        problems.append(f"method: {value!r} is not one of {', '.join(METHODS)}.")
    return method or "GET"


# -- headers, params, body -----------------------------------------------------------------------------


def _headers(value: Any, problems: list[str]) -> dict[str, str]:
    try:
        validators.validate_headers(value)
    except ValidationError as exc:
        problems.append(f"headers: {' '.join(exc.messages)}")
        return {}
    if any(name.lower() == "authorization" for name in value):
        problems.append(
            "headers: Authorization is set through auth (its secret is kept encrypted in the tool's credentials), "
            "not as a static header."
        )
    return dict(value)


def _params(value: Any, variables: frozenset[str], problems: list[str]) -> dict[str, dict[str, str]]:
    if not isinstance(value, dict):
        problems.append('params: must be an object of argument name -> {"in": "path|query|header|body", "name": ...}.')
        return {}
    normalised: dict[str, dict[str, str]] = {}
    for argument, entry in value.items():
        where = f"params.{argument}"
        if not isinstance(entry, dict):
            problems.append(f'{where}: must be an object like {{"in": "query"}}.')
            continue
        extra = sorted(set(entry) - {"in", "name"})
        if extra:
            problems.append(f"{where}: unknown keys {', '.join(map(repr, extra))} (only 'in' and 'name').")
        place, name = entry.get("in"), entry.get("name", argument)
        if place not in PARAM_PLACES:
            problems.append(f"{where}.in: {place!r} is not one of {', '.join(PARAM_PLACES)}.")
            continue
        if not isinstance(name, str) or not name:
            problems.append(f"{where}.name: must be a non-empty string (the name on the wire).")
            continue
        if place == "path" and name not in variables:
            problems.append(f"{where}: the URL template has no variable {{{name}}} to put it in.")
        if place == "header":
            if not validators.HEADER_NAME_RE.fullmatch(name):
                problems.append(f"{where}: {name!r} is not a valid header name.")
            elif name.lower() == "authorization":
                problems.append(f"{where}: Authorization is set through auth, not from an argument.")
        normalised[argument] = {"in": place, **({"name": name} if name != argument else {})}
    return normalised


def _body(value: Any, problems: list[str]) -> dict[str, Any]:
    default = {"encoding": "json", "argument": None, "content_type": None}
    if not isinstance(value, dict):
        problems.append('body: must be an object like {"encoding": "json"}.')
        return default
    extra = sorted(set(value) - set(default))
    if extra:
        problems.append(f"body: unknown keys {', '.join(map(repr, extra))} (encoding, argument, content_type).")
    encoding = value.get("encoding") or "json"
    argument = value.get("argument") or None
    content_type = value.get("content_type") or None
    if encoding not in ENCODINGS:
        problems.append(f"body.encoding: {encoding!r} is not one of {', '.join(ENCODINGS)}.")
    if argument is not None and not isinstance(argument, str):
        problems.append("body.argument: must be the name of one argument.")
    if encoding == "raw" and argument is None:
        problems.append("body.argument: a raw body is the value of one argument; name it here.")
    if content_type is not None and (
        not isinstance(content_type, str) or "/" not in content_type or any(c in content_type for c in "\r\n")
    ):
        problems.append(f"body.content_type: {content_type!r} is not a media type like text/csv.")
    return {"encoding": encoding, "argument": argument, "content_type": content_type}


# -- auth and its credentials --------------------------------------------------------------------------


def _auth(value: Any, problems: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        problems.append('auth: must be an object like {"type": "bearer"}.')
        return {"type": "none"}
    kind = value.get("type", "none")
    if kind not in AUTH_FIELDS:
        problems.append(f"auth.type: {kind!r} is not one of {', '.join(AUTH_FIELDS)}.")
        return {"type": "none"}
    secrets = sorted(set(value) & _SECRET_NAMES)
    if secrets:
        named = f"{', '.join(map(repr, secrets))} {'is a secret' if len(secrets) == 1 else 'are secrets'}"
        problems.append(f"auth: {named}: set it in the tool's credentials (encrypted at rest), not in backend_config.")
    extra = sorted(set(value) - {"type", *AUTH_FIELDS[kind]} - _SECRET_NAMES)
    if extra:
        allowed = ", ".join(AUTH_FIELDS[kind]) or "nothing but type"
        problems.append(f"auth: unknown keys {', '.join(map(repr, extra))} for type {kind!r} (it takes {allowed}).")
    auth: dict[str, Any] = {"type": kind}
    if kind == "api_key":
        auth["in"] = value.get("in", "header")
        auth["name"] = value.get("name")
        if auth["in"] not in ("header", "query"):
            problems.append(f"auth.in: {auth['in']!r} must be header or query.")
        if not isinstance(auth["name"], str) or not auth["name"]:
            problems.append("auth.name: an API key needs the name of its header (e.g. X-API-Key) or query parameter.")
        elif auth["in"] == "header" and not validators.HEADER_NAME_RE.fullmatch(auth["name"]):
            problems.append(f"auth.name: {auth['name']!r} is not a valid header name.")
    elif kind == "oauth2":
        auth.update(_oauth2(value, problems))
    return auth


def _oauth2(value: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    token_url, scopes = value.get("token_url"), value.get("scopes", [])
    audience, client_auth = value.get("audience") or None, value.get("client_auth", "basic")
    parts = urlsplit(token_url) if isinstance(token_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append("auth.token_url: OAuth 2 client credentials need the http(s) URL of the token endpoint.")
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s and " " not in s for s in scopes):
        problems.append('auth.scopes: must be a list of scope names without spaces, e.g. ["read", "write"].')
    if audience is not None and not isinstance(audience, str):
        problems.append("auth.audience: must be a string.")
    if client_auth not in ("basic", "body"):
        problems.append(
            "auth.client_auth: must be basic (client id and secret in an Authorization header) or body (in the form)."
        )
    return {"token_url": token_url, "scopes": scopes, "audience": audience, "client_auth": client_auth}


def _check_credentials(tool: Any, auth: dict[str, Any]) -> None:
    needed = AUTH_SECRETS.get(auth["type"], ())
    if not needed:
        return
    try:
        credentials = tool.get_credentials()
    except SecretError as exc:
        raise ValidationError({"credentials": str(exc)}) from None
    missing = [name for name in needed if not credentials.get(name)]
    if missing:
        raise ValidationError(
            {
                "credentials": f"Authentication {auth['type']!r} needs the credentials {', '.join(needed)}; "
                f"missing: {', '.join(missing)}."
            }
        )


# -- the rest ------------------------------------------------------------------------------------------


def _retries(value: Any, problems: list[str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES:
        problems.append(f"retries: {value!r} must be a whole number from 0 to {MAX_RETRIES}.")
        return 2
    return value


def _verify_tls(value: Any, problems: list[str]) -> bool:
    if not isinstance(value, bool):
        problems.append("verify_tls: must be true or false.")
        return True
    return value


def _ca_bundle(value: Any, problems: list[str]) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or "-----BEGIN CERTIFICATE-----" not in value:
        problems.append("ca_bundle: must be PEM text (one or more -----BEGIN CERTIFICATE----- blocks).")
        return ""
    try:
        ssl.create_default_context(cadata=value)
    except (ssl.SSLError, ValueError) as exc:
        problems.append(f"ca_bundle: the certificates cannot be loaded ({exc}).")
    return value


def _extract(value: Any, problems: list[str]) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.append("extract: must be a JMESPath expression (text), e.g. data.items[*].id.")
        return None
    try:
        jmespath.compile(value)
    except jmespath.exceptions.JMESPathError as exc:
        detail = " ".join(str(exc).split())
        problems.append(f"extract: {value!r} is not a JMESPath expression: {detail}")
    return value


def _max_response_bytes(value: Any, problems: list[str]) -> int | None:
    if value is None:
        return None
    ceiling = settings.GATEWAY_OUTBOUND_MAX_RESPONSE_BYTES
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ceiling:
        problems.append(
            f"max_response_bytes: {value!r} must be a whole number from 1 to {ceiling} "
            "(GATEWAY_OUTBOUND_MAX_RESPONSE_BYTES), or null for that limit."
        )
        return None
    return value
