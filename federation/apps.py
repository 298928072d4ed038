from django.apps import AppConfig


class FederationConfig(AppConfig):
    """Upstream servers and peer gateways: sync, health, drift, failover, discovery, stdio supervision."""

    name = "federation"
    verbose_name = "Federation"

    def ready(self) -> None:
        from federation import health, processes, sync
        from registry import hooks as catalog_hooks
        from transports.protocol import hooks

        hooks.upstream_lists_changed.connect(sync.after_list_changed)
        hooks.upstream_failed.connect(health.after_call_failure)
        hooks.upstream_process_changed.connect(processes.record_process_state)
        catalog_hooks.gateway_saved.connect(sync.on_gateway_saved, dispatch_uid="federation.sync")
