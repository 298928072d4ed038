from django.apps import AppConfig


class TransportsConfig(AppConfig):
    """MCP transports and the protocol core."""

    name = "transports"
    verbose_name = "MCP transports"

    def ready(self) -> None:
        # The access log's switch (docs/governance.md, "Logs, metrics and traces").
        from transports.observability import configure_access_log

        configure_access_log()
