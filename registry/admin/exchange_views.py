"""Admin pages to export the whole catalog as a JSON file and to import one, through the same services as
``GET /api/export`` and ``POST /api/import`` (``registry.exchange``). Mounted under /admin/catalog/ by
gateway_project.urls.

An import is always previewed first (a dry run); "Apply this import" then applies exactly the previewed
document. The document waits in the signed-in user's session, keyed by its SHA-256 digest, rather than in
a hidden field: the apply form then carries only the digest, so the browser does not send up to
GATEWAY_MAX_BODY_BYTES back (which, as a form field, would count against Django's upload limit), a page
cannot be edited into applying another document than the one shown, and database sessions are shared by
every replica. The apply re-checks the digest of what it applies and refuses any result other than the
previewed one (the catalog changed meanwhile): it rolls back and shows the new preview instead.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import UploadedFile
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache

from registry import crypto, events, exchange, selectors
from registry.exceptions import CatalogError
from registry.models import Gateway, Tool
from registry.representation import KINDS

_MODELS = tuple(kind.model._meta.model_name for kind in KINDS)
# Reading the catalog: the right to view every kind the document holds.
EXPORT_PERMISSIONS = tuple(f"registry.view_{name}" for name in _MODELS)
# Secrets leave the installation only for those who may change what holds them.
SECRETS_PERMISSIONS = ("registry.change_gateway", "registry.change_tool")
# An import may create or replace an entry of any kind.
IMPORT_PERMISSIONS = tuple(f"registry.{verb}_{name}" for name in _MODELS for verb in ("add", "change"))

SESSION_KEY = "catalog_import_previews"
# Previews kept per session (the newest ones): enough for a few tabs, a bound on what a session holds.
MAX_PENDING = 3
FILENAME = "mcp-gateway-catalog-{stamp}.json"


def _size_limit() -> int:
    return int(settings.GATEWAY_MAX_BODY_BYTES)


def _require(request: HttpRequest, permissions: tuple[str, ...]) -> None:
    if not request.user.has_perms(permissions):
        raise PermissionDenied


def _page(request: HttpRequest, template: str, title: str, **context: Any) -> HttpResponse:
    return TemplateResponse(
        request,
        f"admin/catalog/{template}",
        {**admin.site.each_context(request), "title": title, "app_label": "registry", **context},
    )


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


class ExportForm(forms.Form):
    include_secrets = forms.BooleanField(
        required=False,
        label="Include secrets",
        help_text="The credentials of gateways and REST tools, encrypted: with this installation's keys "
        "(GATEWAY_ENCRYPTION_KEYS, or the key derived from SECRET_KEY), so only an installation with the same "
        "keys can read them, or with the passphrase below, to move them to another installation.",
    )
    passphrase = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="Optional, with secrets only: encrypts them with this passphrase instead of this installation's "
        "keys. The import asks for it; it is not stored anywhere.",
    )
    passphrase_again = forms.CharField(
        required=False,
        strip=False,
        label="Passphrase (again)",
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="The same passphrase, to rule out a typo nobody could recover from.",
    )

    def __init__(self, *args: Any, may_export_secrets: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.may_export_secrets = may_export_secrets
        if not may_export_secrets:
            field = self.fields["include_secrets"]
            field.widget.attrs["disabled"] = True  # a hint only: clean() refuses it all the same
            field.help_text = (
                "Not for you: exporting secrets needs the permission to change gateways and tools. " + field.help_text
            )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        passphrase, again = data.get("passphrase") or "", data.get("passphrase_again") or ""
        if data.get("include_secrets") and not self.may_export_secrets:
            self.add_error(
                "include_secrets", "You may not export secrets: it needs the permission to change gateways and tools."
            )
        if passphrase != again:
            self.add_error("passphrase_again", "The two passphrases differ; type the same one twice.")
        elif passphrase and not data.get("include_secrets"):
            self.add_error(
                "passphrase", "A passphrase only protects secrets: tick 'Include secrets', or leave it empty."
            )
        return data


def _catalog_counts() -> list[dict[str, Any]]:
    """What an export holds now: entries per kind, and how many hold credentials."""
    rows = []
    for kind in KINDS:
        queryset = selectors.entry_queryset(kind.model)
        rows.append(
            {
                "label": kind.model._meta.verbose_name_plural,
                "count": queryset.count(),
                "with_secrets": (
                    queryset.exclude(credentials_encrypted="").count() if kind.model in (Gateway, Tool) else None
                ),
            }
        )
    return rows


def _filename(document: dict[str, Any]) -> str:
    stamp = datetime.fromisoformat(document["exported_at"]).astimezone(UTC)
    return FILENAME.format(stamp=stamp.strftime("%Y%m%dT%H%M%SZ"))


@never_cache
@staff_member_required
def catalog_export(request: HttpRequest) -> HttpResponse:
    """GET: the options and what the export holds; POST: the export as a JSON file to download."""
    _require(request, EXPORT_PERMISSIONS)
    may_export_secrets = request.user.has_perms(SECRETS_PERMISSIONS)
    if request.method == "POST":
        form = ExportForm(request.POST, may_export_secrets=may_export_secrets)
        if form.is_valid():
            data = form.cleaned_data
            try:
                document = exchange.catalog_export(
                    include_secrets=data["include_secrets"], passphrase=data["passphrase"] or None
                )
            except CatalogError as exc:  # a stored secret this installation's keys cannot open
                form.add_error(None, exc.message)
            else:
                body = json.dumps(document, indent=2, ensure_ascii=False, cls=DjangoJSONEncoder) + "\n"
                response = HttpResponse(body.encode(), content_type="application/json; charset=utf-8")
                response["Content-Disposition"] = f'attachment; filename="{_filename(document)}"'
                return response
    else:
        form = ExportForm(may_export_secrets=may_export_secrets)
    return _page(request, "export.html", "Export the catalog", form=form, counts=_catalog_counts())


# ---------------------------------------------------------------------------------------------
# Import: preview, then apply
# ---------------------------------------------------------------------------------------------


class ImportForm(forms.Form):
    file = forms.FileField(required=False, help_text="A catalog export (.json), as the export page gives it.")
    text = forms.CharField(
        required=False,
        strip=False,
        label="Or paste the JSON",
        widget=forms.Textarea(attrs={"rows": 10, "cols": 90, "style": "font-family: monospace", "spellcheck": "false"}),
    )
    overwrite = forms.BooleanField(
        required=False,
        help_text="Replace entries that exist here with different content (conflicts). Without it they are kept "
        "and listed as conflicts.",
    )
    passphrase = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
        help_text="If the export's secrets were encrypted with a passphrase. Kept, encrypted, in your session "
        "from the preview to the apply, then dropped.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = _size_limit()
        for name in ("file", "text"):
            self.fields[name].help_text += f" At most {limit:,} bytes (GATEWAY_MAX_BODY_BYTES)."

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        upload: UploadedFile[bytes] | None = data.get("file")
        text: str = data.get("text") or ""
        if bool(upload) == bool(text.strip()):
            raise forms.ValidationError("Upload a file or paste the JSON (one of them).")
        limit = _size_limit()
        if upload:
            size = upload.size or 0
            if size > limit:
                self.add_error("file", _too_large(size, limit))
                return data
            raw = upload.read()
            where = "the file"
        else:
            raw = text.encode()
            where = "the pasted text"
            if len(raw) > limit:
                self.add_error("text", _too_large(len(raw), limit))
                return data
        try:
            data["document"] = json.loads(raw.decode("utf-8-sig"))
        except UnicodeDecodeError:
            self.add_error("file" if upload else "text", f"{where.capitalize()} is not UTF-8 text.")
            return data
        except json.JSONDecodeError as exc:
            self.add_error(
                "file" if upload else "text",
                f"{where.capitalize()} is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
            )
            return data
        except RecursionError:
            self.add_error("file" if upload else "text", f"{where.capitalize()} nests JSON too deeply to read.")
            return data
        data["raw"] = raw
        data["digest"] = hashlib.sha256(raw).hexdigest()
        data["source"] = upload.name if upload else "pasted JSON"
        return data


def _too_large(size: int, limit: int) -> str:
    return f"The document is {size:,} bytes, more than the limit of {limit:,} bytes (GATEWAY_MAX_BODY_BYTES)."


class ApplyForm(forms.Form):
    digest = forms.RegexField(regex=r"^[0-9a-f]{64}$", widget=forms.HiddenInput)


def _outcome_digest(report: exchange.ImportReport) -> str:
    """What an import does, apart from whether it was a dry run: the preview and the apply must agree."""
    outcome = {key: value for key, value in report.as_dict().items() if key != "dry_run"}
    return hashlib.sha256(json.dumps(outcome, sort_keys=True).encode()).hexdigest()


def _remember(request: HttpRequest, *, data: dict[str, Any], report: exchange.ImportReport) -> dict[str, Any]:
    """Keep the previewed document (and its options) in the session under its digest, for the apply."""
    pending: dict[str, Any] = dict(request.session.get(SESSION_KEY) or {})
    pending.pop(data["digest"], None)
    passphrase = data.get("passphrase") or None
    entry = pending[data["digest"]] = {
        "document": data["raw"].decode("utf-8"),
        "source": data["source"],
        "overwrite": bool(data.get("overwrite")),
        # Encrypted like every secret at rest here, never stored in the clear; dropped after the apply.
        "passphrase": crypto.encrypt_json({"passphrase": passphrase}) if passphrase else None,
        "outcome": _outcome_digest(report),
        "at": time.time(),
    }
    while len(pending) > MAX_PENDING:
        oldest = min(pending, key=lambda key: pending[key]["at"])
        del pending[oldest]
    request.session[SESSION_KEY] = pending
    return entry


def _forget(request: HttpRequest, digest: str) -> None:
    pending = dict(request.session.get(SESSION_KEY) or {})
    if pending.pop(digest, None) is not None:
        request.session[SESSION_KEY] = pending


def _report_context(report: exchange.ImportReport) -> dict[str, Any]:
    """The report as the page shows it: per kind, the keys created, updated, unchanged and in conflict (one
    cell each); the conflicts with the fields that differ."""
    labels = {kind.key: kind.model._meta.verbose_name_plural for kind in KINDS}
    rows = []
    for kind in KINDS:
        cells = [
            report.created.get(kind.key, []),
            report.updated.get(kind.key, []),
            report.unchanged.get(kind.key, []),
            [c["key"] for c in report.conflicts if c["kind"] == kind.key],
        ]
        if any(cells):
            rows.append({"label": labels[kind.key], "cells": cells})
    conflicts = [
        {"kind": labels.get(c["kind"], c["kind"]), "key": c["key"], "fields": c["fields"]} for c in report.conflicts
    ]
    total = {
        bucket: sum(len(keys) for keys in getattr(report, bucket).values())
        for bucket in ("created", "updated", "unchanged")
    }
    return {"report": report, "rows": rows, "conflicts": conflicts, "total": total}


def _import_page(request: HttpRequest, form: ImportForm, **context: Any) -> HttpResponse:
    return _page(request, "import.html", "Import a catalog", form=form, **context)


def _preview(request: HttpRequest) -> HttpResponse:
    form = ImportForm(request.POST, request.FILES)
    if not form.is_valid():
        return _import_page(request, form)
    data = form.cleaned_data
    try:
        report = exchange.catalog_import(
            document=data["document"], dry_run=True, overwrite=data["overwrite"], passphrase=data["passphrase"] or None
        )
    except CatalogError as exc:
        form.add_error(None, f"Nothing can be imported: {exc.message}")
        return _import_page(request, form)
    entry = _remember(request, data=data, report=report)
    return _pending_page(request, data["digest"], entry, report)


def _pending_page(
    request: HttpRequest, digest: str, entry: dict[str, Any], report: exchange.ImportReport, **context: Any
) -> HttpResponse:
    """The preview of a kept document: its report and the button that applies it."""
    return _import_page(
        request,
        ImportForm(initial={"overwrite": entry["overwrite"]}),
        apply_form=ApplyForm(initial={"digest": digest}),
        pending={
            "digest": digest,
            "source": entry["source"],
            "overwrite": entry["overwrite"],
            "passphrase": bool(entry["passphrase"]),
        },
        **context,
        **_report_context(report),
    )


def _refused(request: HttpRequest, message: str) -> HttpResponse:
    """The empty form again, under the reason the apply was refused."""
    return _import_page(request, ImportForm(), refusal=f"Nothing was imported: {message}")


def _apply(request: HttpRequest) -> HttpResponse:
    apply_form = ApplyForm(request.POST)
    pending: dict[str, Any] = dict(request.session.get(SESSION_KEY) or {})
    digest = apply_form.cleaned_data["digest"] if apply_form.is_valid() else ""
    entry = pending.get(digest)
    if entry is None:
        return _refused(
            request,
            "this preview is not (or no longer) kept here: it was applied already, newer previews replaced it, "
            "or the form was altered. Preview the document again.",
        )
    raw = entry["document"].encode("utf-8")
    if hashlib.sha256(raw).hexdigest() != digest:  # the session is written by us alone; the check is cheap
        _forget(request, digest)
        return _refused(request, "the kept document does not match its digest. Preview it again.")
    try:
        passphrase = crypto.decrypt_json(entry["passphrase"])["passphrase"] if entry["passphrase"] else None
        with transaction.atomic():
            report = exchange.catalog_import(
                document=json.loads(raw), dry_run=False, overwrite=entry["overwrite"], passphrase=passphrase
            )
            as_previewed = _outcome_digest(report) == entry["outcome"]
            if not as_previewed:
                # The catalog changed since the preview: undo (the catalog-changed event goes with it).
                transaction.set_rollback(True)
    except CatalogError as exc:
        return _refused(request, exc.message)
    if not as_previewed:
        entry["outcome"] = _outcome_digest(report)
        pending[digest] = entry
        request.session[SESSION_KEY] = pending
        return _pending_page(request, digest, entry, replace(report, dry_run=True), changed_since_preview=True)
    _forget(request, digest)
    return _import_page(
        request,
        ImportForm(),
        applied={"digest": digest, "source": entry["source"], "version": events.catalog_version()},
        **_report_context(report),
    )


@never_cache
@staff_member_required
def catalog_import(request: HttpRequest) -> HttpResponse:
    """GET: the form; POST "preview": a dry run and its report; POST "apply": the previewed import, for real."""
    _require(request, IMPORT_PERMISSIONS)
    if request.method != "POST":
        return _import_page(request, ImportForm())
    if "apply" in request.POST:
        return _apply(request)
    return _preview(request)
