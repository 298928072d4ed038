"""The catalog's models. Validation lives on the fields and in ``clean()``, so the admin, the REST
API and imports all apply the same rules (services call ``full_clean()`` before every save).

One module a job: ``catalog`` (the entries and what serves them), ``credentials`` (users' own upstream
credentials), ``tokens`` (issued and revoked bearer tokens), ``history`` (syncs, drift, audit). Import them
from here: ``from registry.models import Tool``."""

from registry.models.catalog import (
    UPSTREAM_TOOL_FIELDS,
    URL_SCHEMES,
    CatalogRevision,
    Gateway,
    Prompt,
    Resource,
    ResourceTemplate,
    TimeStamped,
    Tool,
    VirtualServer,
    default_input_schema,
)
from registry.models.credentials import USER_CREDENTIAL_KINDS, UpstreamCredential
from registry.models.history import AuditEntry, DefinitionChange, SyncRun
from registry.models.tokens import IssuedToken, RevokedToken

__all__ = [
    "UPSTREAM_TOOL_FIELDS",
    "URL_SCHEMES",
    "USER_CREDENTIAL_KINDS",
    "AuditEntry",
    "CatalogRevision",
    "DefinitionChange",
    "Gateway",
    "IssuedToken",
    "Prompt",
    "Resource",
    "ResourceTemplate",
    "RevokedToken",
    "SyncRun",
    "TimeStamped",
    "Tool",
    "UpstreamCredential",
    "VirtualServer",
    "default_input_schema",
]
