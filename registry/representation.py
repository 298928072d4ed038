"""A catalog entry's fields as the catalog export writes them, by natural key, never by database id.

Both the export (``registry.exchange``) and the audit log (``registry.audit``) show entries this way; the
audit log sits below the services and may not import the export, so the shared part lives here."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from django.db import models

from registry.models import VirtualServer

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
