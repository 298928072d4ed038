from django.apps import AppConfig


class TransportsConfig(AppConfig):
    """MCP transports and the protocol core."""

    name = "transports"
    verbose_name = "MCP transports"
