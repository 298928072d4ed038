"""The audit log in the admin: the list (time, actor, via, action, kind, target, outcome) with filters,
a date hierarchy and search; a read-only page per entry with the entry before and after (pretty JSON)
and their diff; export of the list as filtered now, as CSV or JSON (streamed).

Nobody adds, changes or deletes entries here: they are written by the catalog's services and the MCP
core's tool-call hook, and deleted only by retention (GATEWAY_AUDIT_RETENTION_DAYS). Reading needs the
view_auditentry permission (staff)."""

from __future__ import annotations

import csv
import difflib
import json
from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, StreamingHttpResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from registry import audit
from registry.models import AuditEntry

CSV_COLUMNS = ("id", "at", "actor", "via", "action", "kind", "target", "outcome", "before", "after", "detail")
EXPORT_CHUNK = 500


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


class _Echo:
    """A file-like object whose write returns the line (csv.writer into a streaming response)."""

    def write(self, value: str) -> str:
        return value


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("at", "actor", "via", "action", "kind", "target", "outcome")
    list_filter = ("action", "via", "outcome", "kind")
    date_hierarchy = "at"
    search_fields = ("actor", "target")
    list_per_page = 100
    show_full_result_count = False  # counting a long log on every page costs more than it tells
    fields = (
        "at",
        "actor",
        "via",
        "action",
        "kind",
        "target",
        "outcome",
        "detail_pretty",
        "before_pretty",
        "after_pretty",
        "diff",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Detail")
    def detail_pretty(self, obj: AuditEntry) -> str:
        return format_html("<pre>{}</pre>", _pretty(obj.detail)) if obj.detail else "-"

    @admin.display(description="Before")
    def before_pretty(self, obj: AuditEntry) -> str:
        return format_html("<pre>{}</pre>", _pretty(obj.before)) if obj.before is not None else "-"

    @admin.display(description="After")
    def after_pretty(self, obj: AuditEntry) -> str:
        return format_html("<pre>{}</pre>", _pretty(obj.after)) if obj.after is not None else "-"

    @admin.display(description="Diff (before → after)")
    def diff(self, obj: AuditEntry) -> str:
        if obj.before is None and obj.after is None:
            return "-"
        before = _pretty(obj.before).splitlines() if obj.before is not None else []
        after = _pretty(obj.after).splitlines() if obj.after is not None else []
        lines = list(difflib.unified_diff(before, after, "before", "after", lineterm="", n=2))
        if not lines:
            return "No difference."
        return format_html(
            '<pre style="color: var(--body-fg)">{}</pre>', format_html_join("\n", "{}", ((line,) for line in lines))
        )

    def get_urls(self) -> list[URLPattern]:
        export = path(
            "export/<str:fmt>/",
            self.admin_site.admin_view(self.export_view),
            name="registry_auditentry_export",
        )
        return [export, *super().get_urls()]

    def filtered(self, request: HttpRequest) -> QuerySet[AuditEntry]:
        """The entries the change list shows for this request's filters and search, newest first."""
        changelist = self.get_changelist_instance(request)
        return changelist.get_queryset(request).order_by("-at", "-pk")

    def export_view(self, request: HttpRequest, fmt: str) -> StreamingHttpResponse:
        """The filtered list as CSV or JSON, streamed in chunks (a long log never sits in memory)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if fmt not in ("csv", "json"):
            raise Http404("Export as csv or json.")
        rows = (audit.export_row(entry) for entry in self.filtered(request).iterator(chunk_size=EXPORT_CHUNK))
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        if fmt == "csv":
            response = StreamingHttpResponse(_csv_lines(rows), content_type="text/csv; charset=utf-8")
        else:
            response = StreamingHttpResponse(_json_chunks(rows), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
        return response


def _csv_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for row in rows:
        yield writer.writerow(
            [json.dumps(row[c], sort_keys=True) if c in ("before", "after", "detail") else row[c] for c in CSV_COLUMNS]
        )


def _json_chunks(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    yield "["
    for index, row in enumerate(rows):
        yield ("," if index else "") + "\n" + json.dumps(row, sort_keys=True, default=str)
    yield "\n]\n"
