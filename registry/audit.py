"""The audit log (docs/governance.md "audit log"): who is acting, catalog changes, tool calls, retention.

- Who is acting: a context variable (``current()``) set by each entry point: the ``AuditActorMiddleware``
  for the admin and the REST API (the API's authentication names the caller with ``act``), ``acting`` for
  management commands (``registry.management.base``), imports ("import") and syncs ("sync"). Nothing set:
  actor "" via "system" (the scheduler, Celery workers).
- Catalog changes: ``registry.services`` (and the few writers beside it) record one ``AuditEntry`` per
  change in the writing transaction, with the entry before and after as the catalog export represents it;
  credentials never appear (a change to them reads "(changed)"), nor do the values of environment keys
  named like a secret (GATEWAY_LOG_REDACT).
- Tool calls: ``call_log()`` queues ``ToolCalled`` records from the protocol core's hook (bounded: a full
  queue drops and counts, it never blocks a call) and a background thread writes them in batches;
  ``flush()`` writes what is queued now (tests, exit).
- Retention: ``entries_prune`` deletes entries older than GATEWAY_AUDIT_RETENTION_DAYS (the scheduler's
  tick runs it at most once an hour).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import getpass
import hashlib
import json
import logging
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import models
from django.db.models import Q, QuerySet
from django.utils import timezone

from registry.models import AuditEntry, Gateway, Tool
from registry.representation import KIND_OF_MODEL, NATURAL_KEYS, entry_fields

logger = logging.getLogger(__name__)

VIAS = ("admin", "api", "command", "mcp", "sync", "import", "system")
CHANGED = "(changed)"
REDACTED = "(redacted)"


# -- who is acting ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acting:
    """Who is acting and through what. ``request``: an HTTP request whose user is read only when a change
    is recorded (so a request that writes nothing never loads its session for this)."""

    via: str = "system"
    name: str = ""
    request: Any = None

    @property
    def actor(self) -> str:
        if self.name or self.request is None:
            return self.name
        user = getattr(self.request, "user", None)
        return user.get_username() if user is not None and user.is_authenticated else ""


_acting: contextvars.ContextVar[Acting | None] = contextvars.ContextVar("gateway_audit_acting", default=None)


def current() -> Acting:
    """Who is acting now (actor "" via "system" when no entry point said)."""
    return _acting.get() or Acting()


def act(actor: str | None = None, via: str | None = None) -> contextvars.Token[Acting | None]:
    """Say who is acting from here on in this context (keeps the current actor or via when None); the caller,
    or an enclosing ``acting`` block, resets it."""
    now = current()
    if actor is None:
        value = Acting(via=via or now.via, name=now.name, request=now.request)
    else:
        value = Acting(via=via or now.via, name=actor)
    return _acting.set(value)


@contextlib.contextmanager
def acting(actor: str | None = None, via: str | None = None) -> Iterator[Acting]:
    """Who is acting for the block: ``actor`` (a username) through ``via`` (one of VIAS); None keeps the
    current one (an import run by an admin stays that admin's, ``via`` "import")."""
    token = act(actor, via)
    try:
        yield current()
    finally:
        _acting.reset(token)


@contextlib.contextmanager
def acting_for_request(request: Any, via: str) -> Iterator[None]:
    """The middleware's block: the request's user (read lazily) through ``via``."""
    token = _acting.set(Acting(via=via, request=request))
    try:
        yield
    finally:
        _acting.reset(token)


def os_user() -> str:
    """Who runs this process, as the operating system knows them ("" when it cannot tell)."""
    try:
        return getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (a bare container)
        return ""


class AuditedCommand(BaseCommand):
    """The base of every management command that writes: its changes (``call_command`` too) are recorded as
    the operating-system user's who ran it, via "command"."""

    def execute(self, *args: Any, **options: Any) -> Any:
        with acting(os_user(), "command"):
            return super().execute(*args, **options)


# -- redaction ----------------------------------------------------------------------------------------------------


def _secret_key(key: Any, words: Iterable[str]) -> bool:
    lowered = str(key).lower()
    return any(word and word.lower() in lowered for word in words)


def redact(value: Any, words: Iterable[str] | None = None) -> Any:
    """``value`` with every mapping value whose key contains one of ``words`` (default GATEWAY_LOG_REDACT,
    case-insensitive) replaced by "(redacted)", at any depth."""
    words = tuple(settings.GATEWAY_LOG_REDACT if words is None else words)
    if isinstance(value, dict):
        return {k: REDACTED if _secret_key(k, words) else redact(v, words) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, words) for v in value]
    return value


# -- catalog changes ----------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def represent(instance: models.Model) -> dict[str, Any]:
    """The entry as the catalog export shows it, without secrets (credentials are left out; environment
    values under secret-looking keys are redacted)."""
    kind = KIND_OF_MODEL.get(type(instance))
    if kind is None:
        return {"pk": instance.pk, "str": str(instance)}
    out = entry_fields(instance, kind.fields)
    if isinstance(out.get("env"), dict):
        out["env"] = redact(out["env"])
    return dict(_jsonable(out))


def _secret_digest(instance: models.Model) -> str:
    """A digest of the entry's decrypted credentials (ciphertexts differ at every encryption), never stored."""
    if not isinstance(instance, Gateway | Tool) or not instance.credentials_encrypted:
        return ""
    try:
        plain = instance.get_credentials()
    except Exception:  # undecipherable with the current keys: compare the ciphertext
        return hashlib.sha256(instance.credentials_encrypted.encode()).hexdigest()
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


def catalog_enabled() -> bool:
    return bool(settings.GATEWAY_AUDIT_CATALOG)


@dataclass
class Snapshot:
    """An entry as it was before a change (None: it did not exist)."""

    data: dict[str, Any] | None
    secret: str = ""


def snapshot(instance: models.Model) -> Snapshot:
    """The entry as stored now (read again: a form may already have changed the instance in memory)."""
    if instance.pk is None or not catalog_enabled():
        return Snapshot(None)
    manager = type(instance)._default_manager
    queryset = manager.select_related("gateway") if isinstance(instance, Tool) else manager.all()
    stored = queryset.filter(pk=instance.pk).first()
    if stored is None:
        return Snapshot(None)
    return Snapshot(represent(stored), _secret_digest(stored))


def _key(instance: models.Model) -> str:
    field = NATURAL_KEYS.get(type(instance))
    return str(getattr(instance, field) if field else instance.pk)


def _entry(action: str, *, kind: str, target: str, **fields: Any) -> AuditEntry:
    who = current()
    return AuditEntry(
        at=fields.pop("at", None) or timezone.now(),
        actor=who.actor[:150],
        via=who.via,
        action=action,
        kind=kind,
        target=target[:512],
        **fields,
    )


def record_saved(before: Snapshot, instance: models.Model) -> AuditEntry | None:
    """Record that ``instance`` was created (``before`` of nothing) or changed; nothing when it did not change."""
    if not catalog_enabled():
        return None
    after = represent(instance)
    secret = _secret_digest(instance)
    if before.data is not None and before.data == after and before.secret == secret:
        return None
    if before.secret != secret:  # marked on both sides, so the diff shows that they changed, never what
        after["credentials"] = CHANGED
        if before.data is not None:
            before.data["credentials"] = CHANGED
    action = AuditEntry.Action.CREATE if before.data is None else AuditEntry.Action.UPDATE
    entry = _entry(
        action,
        kind=str(instance._meta.verbose_name),
        target=_key(instance),
        outcome="ok",
        before=before.data,
        after=after,
    )
    entry.save()
    return entry


@contextlib.contextmanager
def change(instance: models.Model) -> Iterator[None]:
    """Record the change the block makes to a stored entry (a virtual server's members, say)."""
    before = snapshot(instance)
    yield
    record_saved(before, instance)


def record_deleted(instances: Iterable[models.Model]) -> None:
    """Record the deletion of entries (represented before they go)."""
    if not catalog_enabled():
        return
    rows = [
        _entry(
            AuditEntry.Action.DELETE,
            kind=str(obj._meta.verbose_name),
            target=_key(obj),
            outcome="ok",
            before=represent(obj),
        )
        for obj in instances
    ]
    AuditEntry.objects.bulk_create(rows)


def record_enabled(instances: Iterable[models.Model], *, enabled: bool) -> None:
    """Record entries enabled or disabled in bulk (``instances`` as they were before)."""
    if not catalog_enabled():
        return
    rows = []
    for obj in instances:
        before = represent(obj)
        rows.append(
            _entry(
                AuditEntry.Action.UPDATE,
                kind=str(obj._meta.verbose_name),
                target=_key(obj),
                outcome="ok",
                before=before,
                after={**before, "enabled": enabled},
            )
        )
    AuditEntry.objects.bulk_create(rows)


def record_token(event: str, *, jti: str, subject: str, **detail: Any) -> None:
    """Record a token issued or revoked (its id and owner; never the token's text)."""
    if not catalog_enabled():
        return
    _entry(
        AuditEntry.Action.TOKEN,
        kind="token",
        target=jti,
        outcome=event,
        detail=_jsonable({"event": event, "jti": jti, "user": subject, **detail}),
    ).save()


# -- tool calls ---------------------------------------------------------------------------------------------------


class CallLog:
    """A bounded in-process queue of finished tool calls and the thread that writes them in batches.

    ``offer`` is all a call pays: a length check and an append (no lock, no query, no I/O); a full queue
    drops the record and counts it (``dropped``). The writer thread starts with the first record and
    writes every ``interval`` seconds, or sooner once ``batch`` records wait."""

    def __init__(self, *, capacity: int = 10_000, batch: int = 500, interval: float | None = None) -> None:
        self.capacity, self.batch = capacity, batch
        # Seconds between writes (default GATEWAY_AUDIT_FLUSH_SECONDS); 0: no writer thread, only flush()
        # (tests) and the flush at exit.
        self.interval = float(settings.GATEWAY_AUDIT_FLUSH_SECONDS if interval is None else interval)
        self.background = self.interval > 0
        self.dropped = 0
        self.written = 0
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()

    def offer(self, record: Any) -> bool:
        """Queue a ``ToolCalled``; False (and counted) when the queue is full."""
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            return False
        self._queue.append(record)
        if self._thread is None and self.background:
            self._start()
        elif len(self._queue) >= self.batch:
            self._wake.set()
        return True

    def pending(self) -> int:
        return len(self._queue)

    def clear(self) -> None:
        self._queue.clear()
        self.dropped = 0

    def _start(self) -> None:
        with self._flush_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="gateway-audit-writer", daemon=True)
            self._thread.start()
            atexit.register(self.flush)

    def _run(self) -> None:
        from django.db import connection

        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                logger.warning("audit: could not write tool calls", exc_info=True)
            finally:
                connection.close()  # one connection per second at most; none held while idle

    def flush(self) -> int:
        """Write every queued call now, in batches; how many were written."""
        written = 0
        with self._flush_lock:
            while self._queue:
                records: list[Any] = []
                while self._queue and len(records) < self.batch:
                    records.append(self._queue.popleft())
                AuditEntry.objects.bulk_create([call_entry(record) for record in records])
                written += len(records)
        self.written += written
        return written


def call_entry(record: Any) -> AuditEntry:
    """The AuditEntry of one ``transports.protocol.hooks.ToolCalled`` (arguments only with
    GATEWAY_AUDIT_ARGUMENTS, redacted like the logs)."""
    detail: dict[str, Any] = {
        "server": record.server,
        "session": record.session,
        "gateway": record.gateway,
        "seconds": round(float(record.seconds), 6),
    }
    if record.error:
        detail["error"] = record.error
    if settings.GATEWAY_AUDIT_ARGUMENTS:
        detail["arguments"] = redact(record.arguments)
    return AuditEntry(
        at=datetime.fromtimestamp(record.ended_at, tz=UTC),
        actor=(record.username or "")[:150],
        via="mcp",
        action=AuditEntry.Action.CALL,
        kind="tool",
        target=(record.tool or "")[:512],
        outcome=record.outcome,
        detail=_jsonable(detail),
    )


_call_log: CallLog | None = None


def call_log() -> CallLog:
    """This process's CallLog, made on first use (settings are read then, not at import)."""
    global _call_log
    if _call_log is None:
        _call_log = CallLog()
    return _call_log


def flush() -> int:
    """Write the queued tool calls now."""
    return call_log().flush()


# -- reading and retention ----------------------------------------------------------------------------------------


def entry_list(
    *,
    actor: str | None = None,
    action: str | None = None,
    kind: str | None = None,
    target: str | None = None,
    via: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEntry]:
    """Audit entries, newest first, narrowed by exact actor, action, kind, via, outcome, a target containing
    ``target``, and a time range (since inclusive, until exclusive)."""
    entries = AuditEntry.objects.all()
    exact = {"actor": actor, "action": action, "kind": kind, "via": via, "outcome": outcome}
    entries = entries.filter(**{field: value for field, value in exact.items() if value})
    if target:
        entries = entries.filter(target__icontains=target)
    if since is not None:
        entries = entries.filter(at__gte=since)
    if until is not None:
        entries = entries.filter(at__lt=until)
    return entries.order_by("-at", "-pk")


def entries_prune(*, now: datetime | None = None, days: int | None = None) -> int:
    """Delete entries older than ``days`` (default GATEWAY_AUDIT_RETENTION_DAYS; 0 keeps everything);
    how many went."""
    days = int(settings.GATEWAY_AUDIT_RETENTION_DAYS if days is None else days)
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted, _ = AuditEntry.objects.filter(Q(at__lt=cutoff)).delete()
    return int(deleted)


def export_row(entry: AuditEntry) -> dict[str, Any]:
    """One entry as a JSON-ready mapping (the API's and the admin export's shape)."""
    return {
        "id": entry.pk,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "via": entry.via,
        "action": entry.action,
        "kind": entry.kind,
        "target": entry.target,
        "outcome": entry.outcome,
        "before": entry.before,
        "after": entry.after,
        "detail": entry.detail,
    }
