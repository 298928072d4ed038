"""What happened to the catalog: upstream syncs, held-back definition changes, and the audit log."""

from __future__ import annotations

from django.db import models

from registry.choices import ChangeStatus, SyncTrigger
from registry.models.catalog import Gateway, Tool


class SyncRun(models.Model):
    """One read of an upstream's catalog: when, why, how long, what changed, what failed."""

    gateway = models.ForeignKey(Gateway, on_delete=models.CASCADE, related_name="sync_runs")
    trigger = models.CharField(max_length=16, choices=SyncTrigger.choices, default=SyncTrigger.SCHEDULE)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    ok = models.BooleanField(default=False)
    # Labels such as "tool echo", as CatalogDiff holds them.
    added = models.JSONField(default=list, blank=True)
    updated = models.JSONField(default=list, blank=True)
    removed = models.JSONField(default=list, blank=True)
    held = models.JSONField(default=list, blank=True)  # changed definitions held back for review
    skipped = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-pk"]
        indexes = [models.Index(fields=["gateway", "-started_at"])]

    def __str__(self) -> str:
        return f"{self.gateway} sync at {self.started_at:%Y-%m-%d %H:%M:%S}"


class DefinitionChange(models.Model):
    """A changed definition (description, schemas, annotations) of a known upstream tool, with its diff."""

    tool = models.ForeignKey(Tool, on_delete=models.CASCADE, related_name="definition_changes")
    gateway = models.ForeignKey(Gateway, on_delete=models.CASCADE, related_name="definition_changes")
    detected_at = models.DateTimeField()
    previous = models.JSONField(default=dict)
    current = models.JSONField(default=dict)
    # [{"field": "description", "before": ..., "after": ..., "text": unified diff or ""}]
    diff = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=ChangeStatus.choices, default=ChangeStatus.PENDING)
    decided_by = models.CharField(max_length=150, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-detected_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.tool} changed at {self.detected_at:%Y-%m-%d %H:%M:%S} ({self.status})"


class AuditEntry(models.Model):
    """Who did what, when: a catalog change (with the entry before and after) or a tool call (its outcome;
    its arguments only when GATEWAY_AUDIT_ARGUMENTS is on). Written off the call path, kept for
    GATEWAY_AUDIT_RETENTION_DAYS (docs/governance.md)."""

    class Action(models.TextChoices):
        CREATE = "create", "Created"
        UPDATE = "update", "Changed"
        DELETE = "delete", "Deleted"
        CALL = "call", "Tool call"
        TOKEN = "token", "Token issued or revoked"
        OTHER = "other", "Other"

    at = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=150, blank=True, db_index=True, help_text="Username, or a system part.")
    via = models.CharField(max_length=32, blank=True, help_text="admin, api, command, mcp, sync, import, ...")
    action = models.CharField(max_length=16, choices=Action.choices)
    kind = models.CharField(max_length=32, blank=True, help_text="tool, gateway, virtual server, token, ...")
    target = models.CharField(max_length=512, blank=True, db_index=True, help_text="The entry's name or key.")
    outcome = models.CharField(max_length=16, blank=True, help_text="ok, error, refused, cancelled")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True, help_text="Session, server, gateway, duration, error.")

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["action", "-at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor or '-'} {self.action} {self.kind} {self.target}"
