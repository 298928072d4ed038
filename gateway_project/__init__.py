"""MCP Gateway's Django project: settings, ASGI entry point, URLs, the REST API and Celery."""

from gateway_project.celery import app as celery_app

__all__ = ["celery_app"]
