"""The catalog's REST API: CRUD with paginated, filterable lists for every entity, export/import,
and tokens. Mounted under /api/ by gateway_project.api."""

from datetime import UTC, datetime
from typing import Annotated, Any

from django.conf import settings
from django.http import HttpRequest
from ninja import Field, Header, Path, Query, Router, Schema, Status
from ninja.pagination import LimitOffsetPagination, paginate
from ninja.security.base import AuthBase
from ninja.utils import check_csrf

from registry import audit, auth, catalog_sync, exchange, oauth, schemas, selectors, services
from registry.choices import Scope
from registry.conf import auth_required, parse_duration
from registry.exceptions import AuthenticationFailed, Forbidden, InvalidInput, NotFound
from registry.models import AuditEntry, Gateway, Prompt, Resource, ResourceTemplate, Tool, VirtualServer
from registry.parsers import json_body
from registry.representation import KINDS, Kind

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_E = schemas.Error
# What every authenticated operation may answer besides its own statuses: a request Django refuses (400: a
# foreign Host), no or bad credentials (401), credentials that may not do this (403), a parameter against its
# rules (422), and, with OAuth, the authorization server out of reach (503).
ERRORS: dict[int, Any] = {400: _E, 401: _E, 403: _E, 422: _E, 503: _E}
# ... and what an operation that reads a JSON body adds: malformed (400), too large (413), not JSON (415).
BODY_ERRORS: dict[int, Any] = {**ERRORS, 413: _E, 415: _E}
NOT_FOUND: dict[int, Any] = {404: _E}
CONFLICT: dict[int, Any] = {409: _E}
# A catalog entry's id: the largest a BigAutoField holds, so a larger number is a 422, not a database error.
Id = Annotated[int, Path(ge=1, le=2**63 - 1, description="The entry's id, as its list shows it.")]


class ApiAuth(AuthBase):
    """Bearer token, HTTP Basic or the admin's session; the caller must hold ``scope``."""

    openapi_type = "http"
    openapi_scheme = "bearer"

    def __init__(self, scope: str) -> None:
        super().__init__()
        self.scope = scope

    def __call__(self, request: HttpRequest) -> auth.Principal:
        if not auth_required():
            return auth.ANONYMOUS
        audiences = None
        if oauth.enabled():  # an OAuth access token here names the gateway or its REST API as audience
            audiences = oauth.audiences(oauth.base_urls(request.get_host(), request.scheme or "http"), None, rest=True)
        principal = auth.principal_from_authorization(request.headers.get("Authorization"), audiences=audiences)
        if principal is None:
            principal = auth.session_principal(request.user)
            if principal is not None and request.method not in SAFE_METHODS and check_csrf(request) is not None:
                raise Forbidden("CSRF check failed: send the X-CSRFToken header with the admin session's token.")
        if principal is None:
            raise AuthenticationFailed(
                "Authentication required: send 'Authorization: Bearer <token>' (see `manage.py issue_token`) "
                "or HTTP Basic credentials."
            )
        refusal = auth.rest_refusal(principal)
        if refusal is not None:
            raise Forbidden(refusal)
        if not principal.allows(self.scope) and principal.method == "oauth":
            wanted = {Scope.READ: "READ", Scope.CALL: "CALL", Scope.WRITE: "WRITE"}[Scope(self.scope)]
            name = getattr(settings, f"GATEWAY_OAUTH_SCOPE_{wanted}")
            raise oauth.InsufficientScope(
                f"Your token does not allow '{self.scope}': ask the authorization server for {name!r}.", name
            )
        if not principal.allows(self.scope):
            raise Forbidden(
                f"Your credentials do not allow '{self.scope}' "
                f"(they allow: {', '.join(sorted(principal.scopes)) or 'nothing'})."
            )
        audit.act(principal.username, "api")  # reset by the AuditActorMiddleware at the request's end
        return principal


READ, WRITE, CALL = ApiAuth(Scope.READ), ApiAuth(Scope.WRITE), ApiAuth(Scope.CALL)
router = Router(auth=READ)


class Pagination(LimitOffsetPagination):
    """limit/offset pages; default and maximum page size from GATEWAY_PAGE_SIZE / GATEWAY_MAX_PAGE_SIZE."""

    class Input(Schema):
        limit: int | None = Field(
            None,
            # The maximum is a setting: stated when the document is made (at request time, not at import).
            json_schema_extra=lambda schema: schema.update(minimum=1, maximum=settings.GATEWAY_MAX_PAGE_SIZE),
            description="Entries per page, 1 to GATEWAY_MAX_PAGE_SIZE; default GATEWAY_PAGE_SIZE.",
        )
        offset: int = Field(0, ge=0, le=2**62, description="Entries to skip.")

    def paginate_queryset(self, queryset: Any, pagination: Any, request: HttpRequest, **params: Any) -> Any:
        default, maximum = settings.GATEWAY_PAGE_SIZE, settings.GATEWAY_MAX_PAGE_SIZE
        limit = pagination.limit if pagination.limit is not None else default
        if not 1 <= limit <= maximum:
            raise InvalidInput(f"limit must be between 1 and {maximum}.")
        return {"items": queryset[pagination.offset : pagination.offset + limit], "count": self._items_count(queryset)}


def register_crud(
    router: Router,
    *,
    prefix: str,
    model: type[Any],
    schema_in: type[Schema],
    schema_out: type[Schema],
    filters: type[Schema],
    create: bool = True,
) -> None:
    """List, create, read, replace, patch and delete endpoints for one catalog entity on ``router``
    (``create=False`` leaves POST to the caller, as federation does for gateways)."""
    noun = model._meta.verbose_name
    schema_patch = schemas.partial(schema_in, f"{schema_in.__name__}Patch")
    tag = model._meta.verbose_name_plural.title()

    @router.get(
        f"/{prefix}",
        response={200: list[schema_out], **ERRORS},  # type: ignore[valid-type]
        tags=[tag],
        operation_id=f"{prefix}_list",
        summary=f"List {noun}s",
    )
    @paginate(Pagination)
    def list_entries(request: HttpRequest, query: Query[filters]) -> Any:  # type: ignore[valid-type]
        return selectors.entry_list(model, filters=query.model_dump())  # type: ignore[attr-defined]

    if create:

        @router.post(
            f"/{prefix}",
            response={201: schema_out, **CONFLICT, **BODY_ERRORS},
            auth=WRITE,
            tags=[tag],
            operation_id=f"{prefix}_create",
            summary=f"Create a {noun}",
        )
        def create_entry(request: HttpRequest, payload: schema_in) -> Any:  # type: ignore[valid-type]
            created = services.entry_create(model, data=schemas.to_data(payload))
            return Status(201, selectors.entry_get(model, pk=created.pk))

    @router.get(
        f"/{prefix}/{{int:pk}}",
        response={200: schema_out, **NOT_FOUND, **ERRORS},
        tags=[tag],
        operation_id=f"{prefix}_read",
        summary=f"Read a {noun}",
    )
    def read_entry(request: HttpRequest, pk: Id) -> Any:
        return selectors.entry_get(model, pk=pk)

    def _update(pk: Id, payload: Schema, *, partial: bool) -> Any:
        instance = selectors.entry_get(model, pk=pk)
        data = schemas.to_data(payload, partial=partial)
        if getattr(instance, "gateway_id", None) is not None:
            # The upstream owns these: a PUT that leaves them out keeps them (sending a different value is 422).
            for field in services.UPSTREAM_FIELDS.get(model, ()):
                if field not in payload.model_fields_set:
                    data.pop(field, None)
            services.upstream_fields_refuse(instance, data)
        services.entry_update(instance, data=data)
        return selectors.entry_get(model, pk=pk)

    @router.put(
        f"/{prefix}/{{int:pk}}",
        response={200: schema_out, **NOT_FOUND, **CONFLICT, **BODY_ERRORS},
        auth=WRITE,
        tags=[tag],
        operation_id=f"{prefix}_replace",
        summary=f"Replace a {noun}",
    )
    def replace_entry(request: HttpRequest, pk: Id, payload: schema_in) -> Any:  # type: ignore[valid-type]
        return _update(pk, payload, partial=False)

    @router.patch(
        f"/{prefix}/{{int:pk}}",
        response={200: schema_out, **NOT_FOUND, **CONFLICT, **BODY_ERRORS},
        auth=WRITE,
        tags=[tag],
        operation_id=f"{prefix}_update",
        summary=f"Change some fields of a {noun}",
    )
    def patch_entry(request: HttpRequest, pk: Id, payload: schema_patch) -> Any:  # type: ignore[valid-type]
        return _update(pk, payload, partial=True)

    @router.delete(
        f"/{prefix}/{{int:pk}}",
        response={204: None, **NOT_FOUND, **ERRORS},
        auth=WRITE,
        tags=[tag],
        operation_id=f"{prefix}_delete",
        summary=f"Delete a {noun}",
    )
    def delete_entry(request: HttpRequest, pk: Id) -> Any:
        services.entry_delete(selectors.entry_get(model, pk=pk))
        return Status(204, None)


register_crud(
    router,
    prefix="tools",
    model=Tool,
    schema_in=schemas.ToolIn,
    schema_out=schemas.ToolOut,
    filters=schemas.ToolFilters,
)


@router.post(
    "/tools/validate",
    response={200: schemas.Valid, **CONFLICT, **BODY_ERRORS},
    auth=WRITE,
    tags=["Tools"],
    operation_id="tools_validate",
    summary="Check a tool definition without storing it",
)
def validate_tool(request: HttpRequest, payload: schemas.ToolIn) -> Any:
    """Apply every rule that creating the tool would (its kind's definition rules and credentials
    included) and store nothing: 200 with {"valid": true}, 422 with the errors by field, 409 when the
    name is taken."""
    services.entry_validate(Tool, data=schemas.to_data(payload))
    return {"valid": True}


@router.post(
    "/tools/{int:pk}/approve-definition",
    response={200: schemas.DefinitionChangeOut, **NOT_FOUND, **CONFLICT, **ERRORS},
    auth=WRITE,
    tags=["Tools"],
    operation_id="tools_approve_definition",
    summary="Approve a tool's changed upstream definition",
)
def approve_definition(request: HttpRequest, pk: Id) -> Any:
    """Put the definition the upstream changed to (held back by GATEWAY_DRIFT_POLICY hold or withhold)
    into service: 200 with the approved change, 409 when no change waits for approval."""
    principal: auth.Principal = request.auth  # type: ignore[attr-defined]
    return catalog_sync.definition_change_approve(tool=selectors.entry_get(Tool, pk=pk), user=principal.username)


@router.post(
    "/tools/{int:pk}/reject-definition",
    response={200: schemas.DefinitionChangeOut, **NOT_FOUND, **CONFLICT, **ERRORS},
    auth=WRITE,
    tags=["Tools"],
    operation_id="tools_reject_definition",
    summary="Reject a tool's changed upstream definition",
)
def reject_definition(request: HttpRequest, pk: Id) -> Any:
    """Refuse the definition the upstream changed to: the approved one keeps serving and the same change is
    not held again (a different one is). 200 with the rejected change, 409 when no change waits."""
    principal: auth.Principal = request.auth  # type: ignore[attr-defined]
    return catalog_sync.definition_change_reject(tool=selectors.entry_get(Tool, pk=pk), user=principal.username)


register_crud(
    router,
    prefix="resources",
    model=Resource,
    schema_in=schemas.ResourceIn,
    schema_out=schemas.ResourceOut,
    filters=schemas.SourceFilters,
)
register_crud(
    router,
    prefix="resource-templates",
    model=ResourceTemplate,
    schema_in=schemas.ResourceTemplateIn,
    schema_out=schemas.ResourceTemplateOut,
    filters=schemas.SourceFilters,
)
register_crud(
    router,
    prefix="prompts",
    model=Prompt,
    schema_in=schemas.PromptIn,
    schema_out=schemas.PromptOut,
    filters=schemas.SourceFilters,
)
register_crud(
    router,
    prefix="servers",
    model=VirtualServer,
    schema_in=schemas.VirtualServerIn,
    schema_out=schemas.VirtualServerOut,
    filters=schemas.Filters,
)


Passphrase = Annotated[
    str | None,
    Header(
        None,
        alias="X-Catalog-Passphrase",
        description="Encrypt (export) or decrypt (import) the secrets with this passphrase instead of this "
        "installation's keys.",
    ),
]


@router.get(
    "/export",
    response={200: dict[str, Any], **ERRORS},
    tags=["Catalog"],
    operation_id="catalog_export",
    summary="Export the whole catalog",
)
def export_catalog(request: HttpRequest, include_secrets: bool = False, passphrase: Passphrase = None) -> Any:
    """The catalog as one JSON document. With include_secrets (staff only) the credentials of
    gateways and REST tools are included, encrypted with this installation's keys, or with the
    passphrase sent in the X-Catalog-Passphrase header."""
    if include_secrets and not request.auth.allows(Scope.WRITE):  # type: ignore[attr-defined]
        raise Forbidden("Exporting secrets needs the 'write' scope.")
    return exchange.catalog_export(include_secrets=include_secrets, passphrase=passphrase or None)


def _import_item(kind: Kind) -> dict[str, Any]:
    """An entry of an export as the import reads it: the kind's create body, with its secrets (when exported)
    as credentials_encrypted instead of credentials."""
    schema = kind.schema.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    schema["properties"].pop("credentials", None)
    if kind.model in exchange.WITH_SECRETS:
        schema["properties"]["credentials_encrypted"] = {"type": "string"}
    return schema


# The body is read by json_body (an export of another version must reach the import's own checks, not a
# schema's); the document describes it.
_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "A document from GET /api/export.",
                    "required": ["format", "version"],
                    "additionalProperties": False,
                    "properties": {
                        "format": {"const": exchange.FORMAT},
                        "version": {"const": exchange.VERSION},
                        "exported_at": {"type": "string"},
                        "secrets": {"type": "object"},
                        **{kind.key: {"type": "array", "items": _import_item(kind)} for kind in KINDS},
                    },
                }
            }
        },
    }
}


@router.post(
    "/import",
    response={200: schemas.ImportReport, **BODY_ERRORS},
    auth=WRITE,
    tags=["Catalog"],
    operation_id="catalog_import",
    summary="Import a catalog export",
    openapi_extra=_IMPORT_BODY,
)
def import_catalog(
    request: HttpRequest, dry_run: bool = False, overwrite: bool = False, passphrase: Passphrase = None
) -> Any:
    """Create what is missing, leave identical entries alone, report conflicts (or overwrite them),
    all or nothing. The body is a document from /api/export."""
    report = exchange.catalog_import(
        document=json_body(request),
        dry_run=dry_run,
        overwrite=overwrite,
        passphrase=passphrase or None,
    )
    return report.as_dict()


@router.post(
    "/tokens",
    response={201: schemas.TokenOut, **BODY_ERRORS},
    tags=["Tokens"],
    operation_id="tokens_create",
    summary="Issue a token for yourself",
)
def issue_token(request: HttpRequest, payload: schemas.TokenIn) -> Any:
    """A new bearer token for the caller, at most with the caller's own scopes; optionally named and bound to
    one virtual server. The token is in this answer only: GET /api/tokens lists it without its text."""
    principal: auth.Principal = request.auth  # type: ignore[attr-defined]
    if principal.method == "anonymous":
        raise Forbidden("Tokens are issued to users; authentication is off, so there is no user to issue one to.")
    try:
        expires_in = parse_duration(payload.expires_in) if payload.expires_in else None
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    except OverflowError:
        raise InvalidInput(f"expires_in {payload.expires_in!r} is too long.") from None
    scopes: list[str] = list(payload.scopes) if payload.scopes is not None else sorted(principal.scopes)
    if not set(scopes) <= principal.scopes:
        raise Forbidden("A token cannot carry scopes your own credentials do not have.")
    issued = auth.issued_token_create(
        username=principal.username,
        expires_in=expires_in,
        scopes=scopes,
        name=payload.name,
        server=payload.server or None,
        issued_by=principal.username,
    )
    record = issued.record
    return Status(
        201,
        {
            "token": issued.token,
            "jti": record.jti,
            "name": record.name,
            "scopes": record.scope_list,
            "server": record.server.name if record.server else None,
            "expires_at": record.expires_at,
        },
    )


@router.get(
    "/tokens",
    response={200: list[schemas.TokenRecordOut], **ERRORS},
    tags=["Tokens"],
    operation_id="tokens_list",
    summary="List issued tokens",
)
@paginate(Pagination)
def list_tokens(request: HttpRequest, query: Query[schemas.TokenFilters]) -> Any:
    """Your own tokens, newest first; with the write scope everyone's (narrow with ?user=). Never the token
    text. Tokens issued before tokens were recorded are not listed (they can still be revoked by jti)."""
    principal: auth.Principal = request.auth  # type: ignore[attr-defined]
    username = query.user
    if not principal.allows(Scope.WRITE):
        if username is not None and username != principal.username:
            raise Forbidden("Listing other users' tokens needs the 'write' scope.")
        username = principal.username
    return auth.issued_token_list(username=username, state=query.state, server=query.server)


@router.post(
    "/tokens/revoke",
    response={200: schemas.RevokeOut, **BODY_ERRORS},
    auth=WRITE,
    tags=["Tokens"],
    operation_id="tokens_revoke",
    summary="Revoke a token",
)
def revoke_token(request: HttpRequest, payload: schemas.RevokeIn) -> Any:
    return auth.token_revoke(token_or_jti=payload.token, reason=payload.reason)


@router.post(
    "/tokens/{jti}/revoke",
    response={200: schemas.RevokeOut, **NOT_FOUND, **ERRORS},
    tags=["Tokens"],
    operation_id="tokens_revoke_by_id",
    summary="Revoke a token by its id",
)
def revoke_token_by_id(
    request: HttpRequest,
    jti: Annotated[str, Path(min_length=1, max_length=128, description="The token's id, as GET /api/tokens lists it.")],
    reason: Annotated[str, Query(max_length=256)] = "",
) -> Any:
    """Revoke one of your tokens by its jti (as GET /api/tokens lists them); with the write scope anyone's,
    including tokens issued before tokens were recorded. Revoking twice is harmless."""
    principal: auth.Principal = request.auth  # type: ignore[attr-defined]
    if (
        not principal.allows(Scope.WRITE)
        and not auth.issued_token_list(username=principal.username).filter(jti=jti).exists()
    ):
        raise NotFound(f"You have no token with the id {jti!r}.")
    return auth.token_revoke(token_or_jti=jti, reason=reason)


class AuditEntryOut(Schema):
    """One audit entry: a catalog change (before/after, never secrets) or a tool call (detail)."""

    id: int
    at: datetime
    actor: str
    via: str
    action: str
    kind: str
    target: str
    outcome: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    detail: dict[str, Any]


class AuditFilters(Schema):
    actor: str | None = Field(None, description="Exact username (or system part).")
    action: AuditEntry.Action | None = None
    kind: str | None = Field(None, description="tool, gateway, virtual server, token, ...")
    target: str | None = Field(None, description="Part of the entry's name or key.")
    since: schemas.DateTimeParam | None = Field(None, description="From this time (RFC 3339, inclusive).")
    until: schemas.DateTimeParam | None = Field(None, description="Before this time (RFC 3339, exclusive).")


@router.get(
    "/audit",
    response={200: list[AuditEntryOut], **ERRORS},
    auth=WRITE,
    tags=["Audit"],
    operation_id="audit_list",
    summary="List audit entries",
)
@paginate(Pagination)
def audit_list(request: HttpRequest, query: Query[AuditFilters]) -> Any:
    """Catalog changes, token events and tool calls, newest first (write scope: the log names who did what)."""
    return audit.entry_list(**query.model_dump())


# -- per-user upstream credentials (docs/governance.md) ------------------------------------------------------------


def _caller_user(request: HttpRequest) -> Any:
    from django.contrib.auth import get_user_model

    principal: auth.Principal = request.auth  # type: ignore[attr-defined]
    user = get_user_model().objects.filter(username=principal.username, is_active=True).first()
    if principal.method == "anonymous" or user is None:
        raise Forbidden("Per-user credentials belong to a gateway user; sign in as one.")
    return user


@router.put(
    "/gateways/{int:pk}/my-credentials",
    response={200: schemas.MyCredentialsOut, **NOT_FOUND, **BODY_ERRORS},
    auth=CALL,
    tags=["Gateways"],
    operation_id="gateways_my_credentials_put",
    summary="Store your own credentials for a per-user gateway",
)
def my_credentials_put(request: HttpRequest, pk: Id, payload: schemas.MyCredentialsIn) -> Any:
    """Your own credentials (never returned) for a gateway with per_user_credentials; they replace any you
    stored. Only the caller's own: nobody can set another user's."""
    import time

    user = _caller_user(request)
    gateway = selectors.entry_get(Gateway, pk=pk)
    data = payload.dict(exclude_none=True)
    expires = data.pop("expires_in", None)
    if expires:
        data["expires_at"] = time.time() + expires - min(30, expires / 10)
    stored = services.user_credentials_set(
        user=user,
        gateway=gateway,
        credentials=data,
        expires_at=datetime.fromtimestamp(data["expires_at"], tz=UTC) if expires else None,
    )
    return {"gateway": gateway.name, "connected": True, "updated_at": stored.updated_at}


@router.delete(
    "/gateways/{int:pk}/my-credentials",
    response={200: schemas.MyCredentialsOut, **NOT_FOUND, **ERRORS},
    auth=CALL,
    tags=["Gateways"],
    operation_id="gateways_my_credentials_delete",
    summary="Delete your own credentials for a gateway",
)
def my_credentials_delete(request: HttpRequest, pk: Id) -> Any:
    user = _caller_user(request)
    gateway = selectors.entry_get(Gateway, pk=pk)
    services.user_credentials_delete(user=user, gateway=gateway)
    return {"gateway": gateway.name, "connected": False, "updated_at": None}
