from django.apps import AppConfig


class FederationConfig(AppConfig):
    """Upstream servers and peer gateways: sync, health, failover."""

    name = "federation"
    verbose_name = "Federation"

    def ready(self) -> None:
        from federation.services import refresh_after_list_changed
        from transports.protocol import hooks

        hooks.upstream_lists_changed.connect(refresh_after_list_changed)
