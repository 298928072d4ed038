"""REST endpoints for upstream gateways: the catalog CRUD, plus registering (which connects to the
upstream and reads its catalog) and refreshing. Mounted under /api/ by gateway_project.api."""

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status

from federation import services
from registry import schemas, selectors
from registry import services as registry_services
from registry.api import ERRORS, READ, WRITE, register_crud
from registry.models import Gateway

router = Router(auth=READ)


class SyncReportOut(Schema):
    added: list[str]
    updated: list[str]
    removed: list[str]
    renamed: dict[str, str]
    skipped: list[str]


class GatewayCreated(schemas.GatewayOut):
    sync: SyncReportOut | None = None


@router.post(
    "/gateways",
    response={201: GatewayCreated, 409: schemas.Error, **ERRORS},
    auth=WRITE,
    tags=["Gateways"],
    operation_id="gateways_create",
    summary="Register a gateway",
)
def create_gateway(request: HttpRequest, payload: schemas.GatewayIn, sync: bool = True) -> Any:
    """Register an upstream MCP server. With sync (the default) the gateway connects first, reads
    the upstream's tools, resources, templates and prompts into the catalog, and stores nothing if
    the upstream cannot be reached (422 with the reason). sync=false only stores the settings."""
    data = schemas.to_data(payload)
    if sync:
        gateway, report = services.gateway_add(data=data)
        out: dict[str, Any] = {"sync": report.__dict__}
    else:
        gateway, out = registry_services.entry_create(Gateway, data=data), {"sync": None}
    body = GatewayCreated.from_orm(selectors.entry_get(Gateway, pk=gateway.pk)).model_dump() | out
    return Status(201, body)


@router.post(
    "/gateways/{int:pk}/refresh",
    response={200: SyncReportOut, 404: schemas.Error, **ERRORS},
    auth=WRITE,
    tags=["Gateways"],
    operation_id="gateways_refresh",
    summary="Re-read a gateway's catalog",
)
def refresh_gateway(request: HttpRequest, pk: int) -> Any:
    """Connect to the upstream again and bring its entries in the catalog up to date."""
    report = services.gateway_refresh(gateway=selectors.entry_get(Gateway, pk=pk))
    return report.__dict__


register_crud(
    router,
    prefix="gateways",
    model=Gateway,
    schema_in=schemas.GatewayIn,
    schema_out=schemas.GatewayOut,
    filters=schemas.GatewayFilters,
    create=False,
)
