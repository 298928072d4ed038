"""Services that export the whole catalog as one JSON document and import it back.

Entries are named by natural keys (names, URIs), never by database ids, so a document moves
between installations. Import is one transaction: idempotent (identical entries are left alone),
conflicts (same key, different content) are reported and kept unless ``overwrite`` is set, and
any invalid entry rejects the whole document. Secrets (the credentials of gateways and REST tools) are
exported only when asked, encrypted with the installation's keys or with a passphrase.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.fernet import Fernet
from django.db import models, transaction

from registry import audit, crypto, events, schemas, selectors, services
from registry.exceptions import InvalidInput, SecretError
from registry.models import Gateway, Resource, Tool
from registry.representation import KINDS, Kind, entry_fields

FORMAT = "mcp-gateway-catalog"
VERSION = 1

# The kinds whose entries hold encrypted credentials (``credentials_encrypted``, ``get_credentials``).
WITH_SECRETS: tuple[type[models.Model], ...] = (Gateway, Tool)


def catalog_export(*, include_secrets: bool = False, passphrase: str | None = None) -> dict[str, Any]:
    """The whole catalog as a JSON-ready document; credentials only when include_secrets is set."""
    document: dict[str, Any] = {"format": FORMAT, "version": VERSION, "exported_at": datetime.now(UTC).isoformat()}
    box: Fernet | None = None
    if include_secrets:
        if passphrase:
            box, salt = crypto.passphrase_box(passphrase)
            document["secrets"] = {"encryption": "passphrase", "kdf": "scrypt", "salt": base64.b64encode(salt).decode()}
        else:
            document["secrets"] = {"encryption": "installation-keys"}
    for kind in KINDS:
        items = []
        for obj in selectors.entry_queryset(kind.model).order_by(kind.natural_key):
            item = entry_fields(obj, kind.fields)
            if include_secrets and isinstance(obj, Gateway | Tool) and obj.credentials_encrypted:
                item["credentials_encrypted"] = (
                    crypto.encrypt_json(obj.get_credentials(), box) if box else obj.credentials_encrypted
                )
            items.append(item)
        document[kind.key] = items
    return document


@dataclass
class ImportReport:
    dry_run: bool
    created: dict[str, list[str]] = field(default_factory=dict)
    updated: dict[str, list[str]] = field(default_factory=dict)
    unchanged: dict[str, list[str]] = field(default_factory=dict)
    conflicts: list[dict[str, Any]] = field(default_factory=list)

    def note(self, bucket: str, kind: str, key: str) -> None:
        getattr(self, bucket).setdefault(kind, []).append(key)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "conflicts": self.conflicts,
        }


def _secret_reader(document: dict[str, Any], passphrase: str | None) -> Any:
    secrets = document.get("secrets")
    if not secrets:
        return None
    if secrets.get("encryption") == "passphrase":
        if not passphrase:
            raise InvalidInput("This export's secrets are protected by a passphrase: give it to import them.")
        try:
            salt = base64.b64decode(secrets["salt"], validate=True)
        except (KeyError, binascii.Error, TypeError):
            raise InvalidInput("The export's 'secrets.salt' is missing or not base64.") from None
        try:
            box, _ = crypto.passphrase_box(passphrase, salt)
        except SecretError as exc:
            raise InvalidInput(exc.message) from None
        return lambda token: crypto.decrypt_json(token, box)
    return crypto.decrypt_json


def _check_document(document: Any) -> None:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InvalidInput(f'Not a catalog export: the document must be a JSON object with "format": "{FORMAT}".')
    if document.get("version") != VERSION:
        raise InvalidInput(
            f"Unsupported export version {document.get('version')!r}; this gateway reads version {VERSION}."
        )
    if not isinstance(document.get("secrets", {}), dict):
        raise InvalidInput("'secrets' must be a JSON object (as catalog_export writes it).")
    if not isinstance(document.get("exported_at", ""), str):
        raise InvalidInput("'exported_at' must be a string (as catalog_export writes it).")
    known = {"format", "version", "exported_at", "secrets", *(kind.key for kind in KINDS)}
    unknown = sorted(set(document) - known)
    if unknown:
        raise InvalidInput(f"Unknown top-level key(s) in the export: {', '.join(unknown)}.")
    for kind in KINDS:
        if not isinstance(document.get(kind.key, []), list):
            raise InvalidInput(f"'{kind.key}' must be a list.")


@transaction.atomic
def catalog_import(
    *, document: Any, dry_run: bool = False, overwrite: bool = False, passphrase: str | None = None
) -> ImportReport:
    """Bring a document from catalog_export into the catalog, all or nothing."""
    with audit.acting(via="import"):  # whoever imports, through the import (audited per entry)
        return _catalog_import(document=document, dry_run=dry_run, overwrite=overwrite, passphrase=passphrase)


def _catalog_import(*, document: Any, dry_run: bool, overwrite: bool, passphrase: str | None) -> ImportReport:
    _check_document(document)
    read_secret = _secret_reader(document, passphrase)
    report = ImportReport(dry_run=dry_run)
    changed = False
    for kind in KINDS:
        for index, raw in enumerate(document.get(kind.key, [])):
            where = f"{kind.key}[{index}]"
            item = _validate_item(kind, raw, where)
            key = item[kind.natural_key]
            credentials = None
            if kind.model in WITH_SECRETS and "credentials_encrypted" in item:
                if read_secret is None:
                    raise InvalidInput(f"{where}: credentials_encrypted given but the export has no 'secrets' header.")
                try:
                    credentials = read_secret(item.pop("credentials_encrypted"))
                except SecretError:
                    raise InvalidInput(
                        f"{where}: the credentials cannot be decrypted (wrong passphrase or keys)."
                    ) from None
            existing: Any = kind.model._default_manager.filter(**{kind.natural_key: key}).first()
            if existing is not None:
                current = entry_fields(existing, kind.fields)
                differs = sorted(name for name in kind.fields if current.get(name) != item.get(name))
                if credentials is not None and existing.get_credentials() != credentials:
                    differs.append("credentials")
                if not differs:
                    report.note("unchanged", kind.key, key)
                    continue
                if not overwrite:
                    report.conflicts.append({"kind": kind.key, "key": key, "fields": differs})
                    continue
            _store(kind, existing or kind.model(), item, credentials, where)
            report.note("updated" if existing else "created", kind.key, key)
            changed = True
    if changed:
        events.catalog_changed()
    if dry_run:
        transaction.set_rollback(True)
    return report


def _validate_item(kind: Kind, raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must be a JSON object.")
    allowed = set(kind.fields) | ({"credentials_encrypted"} if kind.model in WITH_SECRETS else set())
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s) {', '.join(unknown)}.")
    if not isinstance(raw.get(kind.natural_key), str):
        raise InvalidInput(f"{where}: '{kind.natural_key}' is required.")
    if not isinstance(raw.get("credentials_encrypted", ""), str):
        raise InvalidInput(f"{where}: 'credentials_encrypted' must be a string (as catalog_export writes it).")
    plain = {k: v for k, v in raw.items() if k != "credentials_encrypted"}
    try:
        parsed = kind.schema.model_validate(plain).model_dump(exclude={"credentials"})
    except ValueError as exc:
        raise InvalidInput(f"{where} ({raw.get(kind.natural_key)!r}): {exc}") from None
    if "arguments" in parsed:
        parsed["arguments"] = [{k: v for k, v in arg.items() if v is not None} for arg in parsed["arguments"]]
    if "credentials_encrypted" in raw:
        parsed["credentials_encrypted"] = raw["credentials_encrypted"]
    return parsed


def _store(kind: Kind, instance: Any, item: dict[str, Any], credentials: dict[str, Any] | None, where: str) -> None:
    data = dict(item)
    if kind.model is Resource and data.get("blob") is not None:
        data["blob"] = schemas.BLOB_DECODER(data["blob"])
    if kind.model is Gateway:
        auth_type = data.pop("auth_type")
        if credentials is not None:
            data["auth_type"], data["credentials"] = auth_type, credentials
        else:  # exported without secrets: keep the kind, the operator supplies the values later
            instance.auth_type = auth_type
    elif kind.model is Tool and credentials is not None:
        data["credentials"] = credentials  # without them, a stored tool keeps its own
    try:
        services.entry_save(instance, data=data)  # no event of its own: catalog_import sends one
    except InvalidInput as exc:
        message = f"{where} ({item.get(kind.natural_key)!r}): {exc.message}"
        if kind.model is Tool and credentials is None and "credentials" in exc.errors:
            message += (
                " The export carries no credentials for this tool: export with include_secrets (with a "
                "passphrase to move them to another installation)."
            )
        raise InvalidInput(message, errors=exc.errors) from None
