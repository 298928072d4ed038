"""URL map of the Django side: admin, REST API, health probes. MCP endpoints are routed in asgi.py."""

from django.contrib import admin
from django.urls import path

from gateway_project import health
from gateway_project.api import api, rpc_api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path("", rpc_api.urls),  # POST /rpc, POST /servers/<name>/rpc
]
