"""OpenAPI import: an OpenAPI 3.0/3.1 document's operations as REST tools (docs/tool-backends.md).

``document`` reads and checks a document, ``refs`` resolves its local references into self-contained
JSON Schemas, ``naming`` gives tools their names, ``urls`` and ``security`` make the REST definition's
URL template and authentication, ``convert`` turns each operation into tool fields, and ``service``
stores them (the entry points call ``openapi_import``).
"""

from registry.openapi.service import OpenApiReport, openapi_import

__all__ = ["OpenApiReport", "openapi_import"]
