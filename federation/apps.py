from django.apps import AppConfig


class FederationConfig(AppConfig):
    """Upstream servers and peer gateways: sync, health, drift, failover, discovery, stdio supervision."""

    name = "federation"
    verbose_name = "Federation"

    def ready(self) -> None:
        from federation import checks, health, processes, scheduler, sync  # noqa: F401 - checks registers itself
        from registry import hooks as catalog_hooks
        from transports.protocol import hooks

        hooks.upstream_lists_changed.connect(sync.after_list_changed)
        hooks.upstream_failed.connect(health.after_call_failure)
        hooks.upstream_process_changed.connect(processes.record_process_state)
        catalog_hooks.gateway_saved.connect(sync.on_gateway_saved, dispatch_uid="federation.sync")
        catalog_hooks.gateway_check_requested.connect(scheduler.on_check_requested, dispatch_uid="federation.check")
        catalog_hooks.gateway_sync_requested.connect(scheduler.on_sync_requested, dispatch_uid="federation.sync_now")
