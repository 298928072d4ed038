"""A catalog entry's fields as the catalog export writes them, by natural key, never by database id.

Both the export (``registry.exchange``) and the audit log (``registry.audit``) show entries this way, and the
services name entries by the same natural keys; the audit log and the services sit below the export and may
not import it, so the shared part (the kinds of entries, ``KINDS``) lives here."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import models
from ninja import Schema

from registry import schemas
from registry.models import Gateway, Prompt, Resource, ResourceTemplate, Tool, VirtualServer


@dataclass(frozen=True)
class Kind:
    """A kind of catalog entry: its key in the export, its model, its natural key and its REST input schema."""

    key: str
    model: type[models.Model]
    natural_key: str
    schema: type[Schema]

    @property
    def fields(self) -> tuple[str, ...]:
        """The writable fields, as the REST API takes them (credentials travel separately)."""
        return tuple(name for name in self.schema.model_fields if name != "credentials")


# In the export's order (gateways before the entries that name them, servers after their members).
KINDS = (
    Kind("gateways", Gateway, "name", schemas.GatewayIn),
    Kind("tools", Tool, "name", schemas.ToolIn),
    Kind("resources", Resource, "uri", schemas.ResourceIn),
    Kind("resource_templates", ResourceTemplate, "uri_template", schemas.ResourceTemplateIn),
    Kind("prompts", Prompt, "name", schemas.PromptIn),
    Kind("servers", VirtualServer, "name", schemas.VirtualServerIn),
)
KIND_OF_MODEL: dict[type[models.Model], Kind] = {kind.model: kind for kind in KINDS}
# Each kind's natural key (unique in the catalog): what the export, the audit log and the services name entries by.
NATURAL_KEYS: dict[type[models.Model], str] = {kind.model: kind.natural_key for kind in KINDS}

# A virtual server's members, each named by its natural key.
MEMBER_KEYS = {
    "tools": "name",
    "resources": "uri",
    "resource_templates": "uri_template",
    "prompts": "name",
    "gateways": "name",
}


def entry_fields(instance: models.Model, names: Iterable[str]) -> dict[str, Any]:
    """The named fields of ``instance``: its gateway by name, a blob in base64, a virtual server's members
    as sorted natural keys, anything else as stored."""
    obj: Any = instance
    out: dict[str, Any] = {}
    for name in names:
        if name == "gateway":
            out[name] = obj.gateway.name if obj.gateway_id else None
        elif name == "blob":
            out[name] = None if obj.blob is None else base64.b64encode(bytes(obj.blob)).decode()
        elif isinstance(obj, VirtualServer) and name in MEMBER_KEYS:
            out[name] = sorted(getattr(m, MEMBER_KEYS[name]) for m in getattr(obj, name).all())
        else:
            out[name] = getattr(obj, name)
    return out
