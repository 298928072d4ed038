"""How the REST API reads a JSON request body: only from a JSON media type (415 otherwise), only
standard JSON numbers (422 naming the field for Infinity, -Infinity, NaN or a number too large for a
float, which Python's json module would accept and the catalog would then emit as invalid JSON), and
a clear 400 for text that is not JSON at all."""

from __future__ import annotations

import json
import math
from typing import Any

from django.http import HttpRequest
from ninja.errors import ValidationError
from ninja.parser import Parser

from registry.exceptions import CatalogError, UnsupportedMediaType


class _NonFinite:
    """Stands where the body had a non-finite number, so the walk afterwards can say where."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], _NonFinite]]:
    if isinstance(value, _NonFinite):
        return [(path, value)]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _paths(item, (*path, key))]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _paths(item, (*path, index))]
    return []


def is_json_media_type(content_type: str | None) -> bool:
    """application/json, or a structured suffix such as application/merge-patch+json."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def json_loads(raw: bytes | str) -> Any:
    """``raw`` as JSON, refusing what is not standard JSON: ValidationError (422) naming each place of a
    non-finite number, CatalogError (400) for malformed text."""
    seen: list[_NonFinite] = []

    def constant(text: str) -> _NonFinite:
        seen.append(_NonFinite(text))
        return seen[-1]

    def number(text: str) -> float | _NonFinite:
        value = float(text)
        return value if math.isfinite(value) else constant(text)

    try:
        document = json.loads(raw, parse_constant=constant, parse_float=number)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise CatalogError(f"Malformed JSON in the request body: {exc}.") from None
    if seen:
        raise ValidationError(
            [
                {
                    "loc": ("body", *path),
                    "msg": f"{found.text} is not a JSON number: send a finite number (JSON has no "
                    "Infinity or NaN, and a float must be at most about 1.8e308)",
                    "type": "finite_number",
                }
                for path, found in _paths(document)
            ]
        )
    return document


def json_body(request: HttpRequest) -> Any:
    """The request's body as JSON (see ``json_loads``); UnsupportedMediaType (415) when it is sent as
    anything but JSON."""
    if not is_json_media_type(request.content_type):
        sent = request.content_type or "no Content-Type"
        raise UnsupportedMediaType(
            f"The request body must be JSON, sent with 'Content-Type: application/json' (got {sent!r})."
        )
    return json_loads(request.body)


class JsonBodyParser(Parser):
    """The NinjaAPI's parser: every operation that takes a JSON body reads it through ``json_body``."""

    def parse_body(self, request: HttpRequest) -> Any:
        return json_body(request)
