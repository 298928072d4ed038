"""OpenAPI security requirements as a REST tool's ``auth`` (docs/tool-backends.md): HTTP basic and
bearer, API keys in a header or the query, and OAuth 2 client credentials. The operation's own
``security`` wins over the document's; the first requirement the gateway can serve is used. The
secrets themselves are not in the document: they are set on the tools afterwards."""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

from registry.openapi.document import mapping
from registry.openapi.refs import Resolver


def auth_for(
    resolver: Resolver, operation: dict[str, Any], *, server: str
) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(the tool's auth or None for none, the security scheme's name, a warning when the operation's
    security cannot be served)."""
    data = resolver.data
    requirements = operation["security"] if "security" in operation else data.get("security")
    if not isinstance(requirements, list) or not requirements:
        return None, None, None
    components = mapping(data, "components")
    schemes = mapping(components, "securitySchemes")
    reasons: list[str] = []
    for requirement in requirements:
        if not isinstance(requirement, dict):
            continue
        if not requirement:  # {} in the list: calling without credentials is one of the options
            return None, None, None
        if len(requirement) > 1:
            reasons.append(f"{' + '.join(sorted(requirement))} together (one scheme per tool is supported)")
            continue
        [(name, scopes)] = requirement.items()
        if name not in schemes:
            reasons.append(f"{name} (not in components.securitySchemes)")
            continue
        scheme, _ = resolver.deref(schemes[name], ("components", "securitySchemes", name))
        auth = _map(scheme, scopes if isinstance(scopes, list) else [], server=server)
        if isinstance(auth, dict):
            return auth, name, None
        reasons.append(f"{name} ({auth})")
    return (
        None,
        None,
        f"its security cannot be mapped: {'; '.join(reasons)}; the tool is imported without authentication",
    )


def _map(scheme: Any, scopes: list[Any], *, server: str) -> dict[str, Any] | str:
    """The auth for one security scheme, or why it cannot be served."""
    if not isinstance(scheme, dict):
        return "not a security scheme object"
    kind = scheme.get("type")
    if kind == "http":
        name = str(scheme.get("scheme", "")).lower()
        if name == "basic":
            return {"type": "basic"}
        if name == "bearer":
            return {"type": "bearer"}
        return f"HTTP {name or '?'} authentication is not supported"
    if kind == "apiKey":
        where = scheme.get("in")
        if where in ("header", "query") and isinstance(scheme.get("name"), str):
            return {"type": "api_key", "in": where, "name": scheme["name"]}
        return f"API keys in a {where} are not supported (header or query only)"
    if kind == "oauth2":
        flows = mapping(scheme, "flows")
        flow = flows.get("clientCredentials")
        if isinstance(flow, dict) and isinstance(flow.get("tokenUrl"), str):
            return {
                "type": "oauth2",
                "token_url": urljoin(server, flow["tokenUrl"]),
                "scopes": [str(scope) for scope in scopes],
            }
        return f"only the OAuth 2 client-credentials flow is supported (this scheme has: {', '.join(flows) or 'none'})"
    return f"{kind} security is not supported"
