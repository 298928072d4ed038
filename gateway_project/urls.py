"""URL map of the Django side: the landing page, admin (with the tool pages of transports.admin_views),
REST API, health probes, the well-known document peers read. MCP endpoints are routed in asgi.py."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from federation import admin_views as federation_admin_views
from federation import views as federation_views
from gateway_project import api as api_module
from gateway_project import dashboard, health, metrics, oauth_views, views
from gateway_project.api import rpc_api
from registry.admin import exchange_views
from transports import admin_views, upstream_accounts

urlpatterns = [
    path("", views.home, name="home"),  # the admin's "View site" (site_url "/") comes here
    # Admin pages that need the runtime (transports), before the admin's own catch-all tool URLs.
    path("admin/registry/tool/<int:pk>/test-call/", admin_views.tool_test_call, name="admin_tool_test_call"),
    path("admin/registry/tool/import-openapi/", admin_views.openapi_import, name="admin_tool_openapi_import"),
    path(
        "admin/registry/gateway/register/",
        federation_admin_views.gateway_register,
        name="admin_gateway_register",
    ),
    path(
        "admin/registry/gateway/<int:pk>/check-now/",
        federation_admin_views.gateway_operate,
        {"job": "check"},
        name="admin_gateway_check_now",
    ),
    path(
        "admin/registry/gateway/<int:pk>/sync-now/",
        federation_admin_views.gateway_operate,
        {"job": "sync"},
        name="admin_gateway_sync_now",
    ),
    path("admin/dashboard/gateways/", dashboard.gateway_health_fragment, name="admin_dashboard_gateways"),
    path("admin/catalog/export/", exchange_views.catalog_export, name="admin_catalog_export"),
    path("admin/catalog/import/", exchange_views.catalog_import, name="admin_catalog_import"),
    path("admin/dashboard/traffic/", dashboard.traffic_fragment, name="admin_dashboard_traffic"),
    path("admin/", admin.site.urls),
    # Per-user upstream credentials (docs/governance.md): any active user connects their own accounts.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/upstreams/", upstream_accounts.upstream_accounts, name="upstream_accounts"),
    path("accounts/upstreams/callback/", upstream_accounts.upstream_callback, name="upstream_accounts_callback"),
    path("accounts/upstreams/<slug:name>/connect/", upstream_accounts.upstream_connect, name="upstream_connect"),
    path(
        "accounts/upstreams/<slug:name>/disconnect/",
        upstream_accounts.upstream_disconnect,
        name="upstream_disconnect",
    ),
    path("api/", api_module.api_urls()),
    # Any other path under /api/ answers a JSON 404 (with a hint when a part should be an id).
    re_path(r"^api/(?P<rest>.*)$", api_module.api_not_found, name="api_not_found"),
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path(".well-known/mcp-gateway", federation_views.well_known, name="well_known_mcp_gateway"),
    # RFC 9728 protected-resource metadata (MCP authorization; 404 while GATEWAY_OAUTH_ISSUER is unset).
    path(".well-known/oauth-protected-resource", oauth_views.protected_resource, name="oauth_protected_resource"),
    re_path(r"^\.well-known/oauth-protected-resource/(?P<path>.+)$", oauth_views.protected_resource),
    path("", rpc_api.urls),  # POST /rpc, POST /servers/<name>/rpc
]

# Under /api/ these answer in JSON (a foreign Host, an unexpected failure...); elsewhere Django's pages.
handler400 = api_module.bad_request
handler403 = api_module.permission_denied
handler404 = api_module.page_not_found
handler500 = api_module.server_error
