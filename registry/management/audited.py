"""The base of every management command that writes: its changes are audited as the operating-system
user who ran it, through "command"."""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand

from registry import audit


def os_user() -> str:
    """Who runs this process, as the operating system knows them ("" when it cannot tell)."""
    try:
        return getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (a bare container)
        return ""


class AuditedCommand(BaseCommand):
    """A BaseCommand whose writes are recorded as the OS user's, via "command" (``call_command`` too)."""

    def execute(self, *args: Any, **options: Any) -> Any:
        with audit.acting(os_user(), "command"):
            return super().execute(*args, **options)
