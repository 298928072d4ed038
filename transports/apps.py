from django.apps import AppConfig


class TransportsConfig(AppConfig):
    """MCP transports and the protocol core."""

    name = "transports"
    verbose_name = "MCP transports"

    def ready(self) -> None:
        from django.conf import settings

        from registry import hooks as catalog_hooks
        from transports import governance, limits
        from transports.protocol import hooks

        limits.install()  # rate and concurrency limits from the settings (docs/governance.md)
        if settings.GATEWAY_AUDIT_CALLS:  # off: not connected, so a call does not even build the record
            hooks.tool_called.connect(governance.tool_called)
        catalog_hooks.token_revoked.connect(governance.token_revoked, dispatch_uid="transports.token_revoked")
        # The access log's switch (docs/governance.md, "Logs, metrics and traces").
        from transports.observability import configure_access_log

        configure_access_log()
