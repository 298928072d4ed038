from django.apps import AppConfig


class GatewayProjectConfig(AppConfig):
    """Registers the project-wide system checks and the start-up warnings."""

    name = "gateway_project"
    verbose_name = "MCP Gateway"

    def ready(self) -> None:
        from gateway_project import checks

        checks.warn_at_startup()
