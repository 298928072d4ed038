"""What the gateway_* commands share: finding gateways by name and printing times and sync results."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.core.management.base import CommandError
from django.db.models import QuerySet
from django.utils import timezone

from registry.models import Gateway


def gateways_named(names: Sequence[str], *, default: QuerySet[Gateway] | None = None) -> list[Gateway]:
    """The gateways of ``names`` in the order given (all of ``default`` when none); CommandError naming
    every unknown name."""
    if not names:
        return list(default if default is not None else Gateway.objects.filter(enabled=True))
    wanted = list(dict.fromkeys(names))
    found = {gateway.name: gateway for gateway in Gateway.objects.filter(name__in=wanted)}
    missing = [name for name in wanted if name not in found]
    if missing:
        listed = ", ".join(repr(name) for name in missing)
        raise CommandError(f"No gateway named {listed}. See `manage.py gateway_list`.")
    return [found[name] for name in wanted]


def when(value: datetime | None, *, never: str = "never") -> str:
    """A stored time in the local time zone, to the second."""
    if value is None:
        return never
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


def sync_counts(result: Any) -> str:
    """ "2 added, 0 updated, 0 removed, 1 held" (", 1 skipped" when some were) of a SyncRun or CatalogDiff."""

    def count(name: str) -> int:
        return len(getattr(result, name, None) or [])

    text = ", ".join(f"{count(name)} {name}" for name in ("added", "updated", "removed", "held"))
    return text + (f", {count('skipped')} skipped" if count("skipped") else "")
