"""What every schema of the API shares: the strict base of request bodies, the PATCH form of a body, the error
and validity answers, the base filters, and a validated body turned into service input."""

from __future__ import annotations

import base64
import binascii
import copy
from typing import Any, get_args

from ninja import Schema
from pydantic import ConfigDict, Field, create_model, field_validator


class In(Schema):
    # Strict: a body's values must have the document's JSON types (no 0 for false, no "5" for 5); an enum
    # field takes its value as text, so it says strict=False.
    model_config = ConfigDict(extra="forbid", strict=True)


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("must not be null; leave the field out to keep its value")
    return value


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # a PATCH field left out keeps the stored value: it has no default


def partial(schema: type[Schema], name: str) -> type[Schema]:
    """The same fields, all optional: the body of a PATCH. A field may be left out, but is null
    only where the full schema allows null (the document says so: no field of a PATCH is nullable
    that is not nullable in the full body)."""
    fields: dict[str, Any] = {}
    for field, info in schema.model_fields.items():
        optional = copy.copy(info)
        optional.default, optional.default_factory = None, None
        optional.json_schema_extra = _no_default
        fields[field] = (info.annotation, optional)
    not_nullable = [field for field, info in schema.model_fields.items() if type(None) not in get_args(info.annotation)]
    before = {"_not_null": field_validator(*not_nullable, mode="before")(_not_null)} if not_nullable else {}
    # The full schema as base: its own validators (a blob must be base64...) check a PATCH's fields too.
    return create_model(name, __base__=schema, __validators__=before, **fields)


class Error(Schema):
    detail: str
    errors: dict[str, list[str]] | list[dict[str, Any]] | None = None


class Valid(Schema):
    valid: bool = True


class Filters(Schema):
    q: str | None = Field(None, description="Text search in names and descriptions.")
    enabled: bool | None = None


def decode_blob(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("blob must be base64 text") from None


BLOB_DECODER = decode_blob


def to_data(payload: Schema, *, partial: bool = False) -> dict[str, Any]:
    """A validated request body as service input: only the fields sent (PATCH) or all of them,
    with base64 blobs decoded and unset optional keys dropped from nested objects."""
    data = payload.model_dump(exclude_unset=partial)
    if data.get("arguments") is not None:
        data["arguments"] = [{k: v for k, v in arg.items() if v is not None} for arg in data["arguments"]]
    if data.get("credentials") is not None:
        data["credentials"] = {k: v for k, v in data["credentials"].items() if v is not None}
    if data.get("blob") is not None:
        data["blob"] = decode_blob(data["blob"])
    return data
