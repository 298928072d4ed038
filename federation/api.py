"""REST endpoints for upstream gateways: the catalog CRUD, plus registering (which connects to the
upstream and reads its catalog), refreshing, checking health and syncing now, and the sync history.
Mounted under /api/ by gateway_project.api."""

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from federation import health, services, sync
from registry import schemas, selectors
from registry import services as registry_services
from registry.api import BODY_ERRORS, CONFLICT, ERRORS, NOT_FOUND, READ, WRITE, Id, register_crud
from registry.choices import Health, SyncTrigger
from registry.models import Gateway, SyncRun

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
    response={201: GatewayCreated, **CONFLICT, **BODY_ERRORS},
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
    response={200: SyncReportOut, **NOT_FOUND, **ERRORS},
    auth=WRITE,
    tags=["Gateways"],
    operation_id="gateways_refresh",
    summary="Re-read a gateway's catalog",
)
def refresh_gateway(request: HttpRequest, pk: Id) -> Any:
    """Connect to the upstream again and bring its entries in the catalog up to date."""
    report = services.gateway_refresh(gateway=selectors.entry_get(Gateway, pk=pk))
    return report.__dict__


class HealthOut(Schema):
    id: int
    name: str
    ok: bool = Field(description="The check reached the upstream.")
    health: Health
    last_error: str
    consecutive_failures: int
    last_checked_at: datetime | None
    last_seen_at: datetime | None
    health_changed_at: datetime | None
    next_check_at: datetime | None = Field(description="Set while unreachable: the next check (backoff).")

    @staticmethod
    def resolve_ok(obj: Gateway) -> bool:
        return obj.consecutive_failures == 0


class SyncRunOut(Schema):
    id: int
    gateway: str
    trigger: SyncTrigger
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int
    ok: bool
    added: list[str]
    updated: list[str]
    removed: list[str]
    held: list[str] = Field(description="Tools whose changed upstream definition waits for review.")
    skipped: list[str]
    error: str

    @staticmethod
    def resolve_gateway(obj: SyncRun) -> str:
        return obj.gateway.name


@router.post(
    "/gateways/{int:pk}/check",
    response={200: HealthOut, **NOT_FOUND, **ERRORS},
    auth=WRITE,
    tags=["Gateways"],
    operation_id="gateways_check",
    summary="Health-check a gateway now",
)
def check_gateway(request: HttpRequest, pk: Id) -> Any:
    """Probe the upstream once (ping, or server/discover for 2026-07-28) and record the result; the answer is
    the gateway's health after it. An unreachable upstream is a 200 with ok false and the reason."""
    gateway = selectors.entry_get(Gateway, pk=pk)
    health.gateway_check(gateway=gateway)
    gateway.refresh_from_db()
    return gateway


@router.post(
    "/gateways/{int:pk}/sync",
    response={200: SyncRunOut, **NOT_FOUND, **ERRORS},
    auth=WRITE,
    tags=["Gateways"],
    operation_id="gateways_sync",
    summary="Sync a gateway's catalog now",
)
def sync_gateway(request: HttpRequest, pk: Id) -> Any:
    """Read the upstream's catalog and apply the difference; the answer is the sync run. When the upstream
    cannot be read: 422 with the reason (the failed run is in the sync history)."""
    return sync.gateway_sync(gateway=selectors.entry_get(Gateway, pk=pk), trigger=SyncTrigger.MANUAL)


@router.get(
    "/gateways/{int:pk}/sync-runs",
    response={200: list[SyncRunOut], **NOT_FOUND, **ERRORS},
    tags=["Gateways"],
    operation_id="gateways_sync_runs",
    summary="A gateway's recent sync runs",
)
def sync_runs(request: HttpRequest, pk: Id, limit: int = 20) -> Any:
    """The gateway's sync runs, newest first (at most ``limit``, 1 to 100)."""
    gateway = selectors.entry_get(Gateway, pk=pk)
    limit = max(1, min(limit, 100))
    runs = SyncRun.objects.filter(gateway=gateway).select_related("gateway").order_by("-started_at", "-pk")
    return list(runs[:limit])


register_crud(
    router,
    prefix="gateways",
    model=Gateway,
    schema_in=schemas.GatewayIn,
    schema_out=schemas.GatewayOut,
    filters=schemas.GatewayFilters,
    create=False,
)
