from django.apps import AppConfig


class FederationConfig(AppConfig):
    """Upstream servers and peer gateways: sync, health, failover."""

    name = "federation"
    verbose_name = "Federation"
