"""The Django admin for the catalog: search, filters, bulk enable/disable, formatted JSON fields
with errors shown on the field, write-only credentials, and every write through the services
(``base``); tools (``tools``) and the other entries (``catalog``) register their pages here, and so do
the issued tokens (``tokens``: issue one, shown once; list; revoke) and the audit log (``audit``: browse,
export)."""

from django.contrib import admin

from registry.admin import audit, catalog, tokens, tools

admin.site.site_header = "MCP Gateway"
admin.site.site_title = "MCP Gateway"
admin.site.index_title = "Catalog administration"

__all__ = ["audit", "catalog", "tokens", "tools"]
