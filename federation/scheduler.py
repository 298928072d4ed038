"""Where federation's periodic and on-demand work runs (docs/federation.md "Where it runs").

``tick()`` finds what is due (health checks, scheduled syncs, the sync after a recovery) and hands
each job to ``enqueue``, which gives it to whichever runner this process has:

- the in-process scheduler (``InProcessScheduler``: a daemon thread that ticks, and a small thread
  pool), started once per gateway process by ``start_background()`` when ``GATEWAY_SCHEDULER``
  resolves to ``inprocess``;
- Celery (``federation.tasks``) when it resolves to ``celery``: beat sends ``tick``, workers run the
  jobs;
- else inline, in the caller (``off``, or a ``manage.py`` command).

Every job runs through ``run_job``, which holds the gateway's lease (``registry.leases``) for its
duration, so one gateway's work never runs twice at once, whatever runs it and on how many replicas.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import Max
from django.utils import timezone

from registry import audit, gateway_state, leases
from registry.choices import Health, SyncTrigger
from registry.exceptions import CatalogError
from registry.models import Gateway

logger = logging.getLogger(__name__)

CHECK, SYNC = "check", "sync"
JOBS = (CHECK, SYNC)
MODES = ("auto", "inprocess", "celery", "off")


@dataclass
class TickReport:
    """What one tick found due and handed on: gateway ids per job."""

    checks: list[int] = field(default_factory=list)
    syncs: list[int] = field(default_factory=list)
    recoveries: list[int] = field(default_factory=list)  # of syncs: gateways that just became healthy

    def as_dict(self) -> dict[str, list[int]]:
        return {"checks": self.checks, "syncs": self.syncs, "recoveries": self.recoveries}


def scheduler_mode() -> str:
    """GATEWAY_SCHEDULER resolved: "celery" or "inprocess" for auto (by REDIS_URL), else as set."""
    mode = str(settings.GATEWAY_SCHEDULER).lower()
    if mode == "auto":
        return "celery" if settings.REDIS_URL else "inprocess"
    return mode


def _sync_interval(gateway_interval: int | None) -> int:
    return int(settings.GATEWAY_SYNC_INTERVAL if gateway_interval is None else gateway_interval)


def syncs_due(*, now: datetime) -> tuple[list[int], list[int]]:
    """(scheduled, recoveries): enabled, not unreachable gateways whose sync is due.

    Scheduled: the interval (the gateway's, else GATEWAY_SYNC_INTERVAL) is > 0 and neither the last
    successful sync nor the last attempt is more recent than it, so a failing upstream is retried once
    per interval, not once per tick. Recovery: the gateway turned healthy after its last sync attempt
    (what changed upstream while it was down was never announced to us)."""
    scheduled: list[int] = []
    recoveries: list[int] = []
    rows = (
        Gateway.objects.filter(enabled=True)
        .exclude(health=Health.UNREACHABLE)
        .annotate(last_attempt=Max("sync_runs__started_at"))
        .values_list("pk", "sync_interval", "last_synced_at", "last_attempt", "health", "health_changed_at")
    )
    for pk, own_interval, synced_at, attempted_at, health, changed_at in rows:
        latest = max((t for t in (synced_at, attempted_at) if t is not None), default=None)
        if health == Health.HEALTHY and changed_at is not None and (latest is None or changed_at > latest):
            recoveries.append(pk)
            continue
        interval = _sync_interval(own_interval)
        if interval > 0 and (latest is None or latest <= now - timedelta(seconds=interval)):
            scheduled.append(pk)
    return scheduled, recoveries


def tick(*, now: datetime | None = None) -> TickReport:
    """Find the checks and syncs that are due and enqueue one job per gateway for each."""
    now = now or timezone.now()
    report = TickReport()
    report.checks = list(gateway_state.gateways_due_for_check(now=now))
    report.syncs, report.recoveries = syncs_due(now=now)
    for gateway_id in report.checks:
        enqueue(CHECK, gateway_id)
    for gateway_id in report.syncs:
        enqueue(SYNC, gateway_id, trigger=SyncTrigger.SCHEDULE)
    for gateway_id in report.recoveries:
        enqueue(SYNC, gateway_id, trigger=SyncTrigger.SCHEDULE)
    report.syncs += report.recoveries
    audit_prune_due(now=now)
    return report


AUDIT_PRUNE_SECONDS = 3600.0
_audit_pruned_at: datetime | None = None


def audit_prune_due(*, now: datetime) -> int | None:
    """Delete audit entries past GATEWAY_AUDIT_RETENTION_DAYS, at most once an hour per process (every
    runner ticks: the in-process scheduler, or Celery beat's tick task; a delete by age is the same on any
    replica, so replicas need no lease for it). None when not due."""
    global _audit_pruned_at
    if _audit_pruned_at is not None and (now - _audit_pruned_at).total_seconds() < AUDIT_PRUNE_SECONDS:
        return None
    _audit_pruned_at = now
    try:
        return audit.entries_prune(now=now)
    except Exception:  # the next hour tries again; never stops the checks and syncs
        logger.warning("audit retention failed", exc_info=True)
        return None


def _lease_owner() -> str:
    """Unique per job run (host, process, run), so two threads of one process never share a lease."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


class Busy(Exception):
    """Another worker holds the gateway's lease: a check or sync of it is running now."""


@contextlib.contextmanager
def gateway_leased(gateway_id: int) -> Iterator[Gateway | None]:
    """Hold the gateway's lease for the block, which gets the gateway (None when it is gone); Busy when
    another worker holds it. One check or sync per gateway at a time, across workers and replicas."""
    owner = _lease_owner()
    if not leases.gateway_lease_acquire(gateway_id=gateway_id, owner=owner, seconds=settings.GATEWAY_LEASE_SECONDS):
        if Gateway.objects.filter(pk=gateway_id).exists():
            raise Busy(f"A check or sync of gateway {gateway_id} is running now.")
        yield None
        return
    try:
        yield Gateway.objects.filter(pk=gateway_id).first()
    finally:
        leases.gateway_lease_release(gateway_id=gateway_id, owner=owner)


def run_job(job: str, gateway_id: int, **options: Any) -> str:
    """Run one check or sync of the gateway under its lease: "done", "failed" (recorded on the gateway),
    "busy" (another worker holds the lease: skipped), "gone" (no such gateway) or "error" (logged)."""
    from federation import health, sync

    if job not in JOBS:
        raise ValueError(f"Unknown job {job!r}: use one of {', '.join(JOBS)}.")
    try:
        with gateway_leased(gateway_id) as gateway:
            if gateway is None:
                logger.debug("%s of gateway %s skipped: gone", job, gateway_id)
                return "gone"
            if job == CHECK:
                health.gateway_check(gateway=gateway)
            else:
                sync.gateway_sync(gateway=gateway, trigger=options.get("trigger", SyncTrigger.SCHEDULE))
            return "done"
    except Busy:
        logger.debug("%s of gateway %s skipped: busy", job, gateway_id)
        return "busy"
    except CatalogError as exc:
        # The service recorded the failure on the gateway (health, SyncRun); nothing more to do here.
        logger.info("%s of gateway %s failed: %s", job, gateway_id, exc.message)
        return "failed"
    except Exception:
        logger.exception("%s of gateway %s raised", job, gateway_id)
        return "error"


class InProcessScheduler:
    """The embedded runner: a daemon thread ticking every GATEWAY_SCHEDULER_TICK s and a pool of
    GATEWAY_SCHEDULER_WORKERS threads running the jobs, at most one queued or running per (job, gateway)."""

    def __init__(self, *, tick_seconds: float | None = None, workers: int | None = None) -> None:
        self.tick_seconds = float(tick_seconds or settings.GATEWAY_SCHEDULER_TICK)
        self.workers = int(workers or settings.GATEWAY_SCHEDULER_WORKERS)
        self._pending: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> None:
        """Start the tick thread and the pool (the first tick runs at once)."""
        if self._thread is not None:
            return
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="gateway-job")
        self._thread = threading.Thread(target=self._loop, name="gateway-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop ticking, drop the queued jobs and wait (up to ``timeout`` s) for the running ones."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, job: str, gateway_id: int, **options: Any) -> bool:
        """Queue a job; False when the same job of the gateway is already queued or running."""
        key = (job, gateway_id)
        with self._lock:
            if key in self._pending or self._pool is None or self._stop.is_set():
                return False
            self._pending.add(key)
        try:
            self._pool.submit(self._run, key, options)
        except RuntimeError:  # the pool was shut down in between
            with self._lock:
                self._pending.discard(key)
            return False
        return True

    def _run(self, key: tuple[str, int], options: dict[str, Any]) -> None:
        try:
            close_old_connections()
            run_job(key[0], key[1], **options)
        finally:
            with self._lock:
                self._pending.discard(key)
            # Pool threads are long-lived and outside any request: close the connection Django opened
            # for this job, or each thread would keep one open (and hold SQLite's file) forever.
            connection.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                tick()
            except Exception:
                logger.exception("scheduler tick failed")
            finally:
                connection.close()
            self._stop.wait(self.tick_seconds)


_lock = threading.Lock()
_scheduler: InProcessScheduler | None = None
_scheduler_pid: int | None = None


def running_scheduler() -> InProcessScheduler | None:
    """This process's in-process scheduler, if it runs."""
    if _scheduler is not None and _scheduler_pid == os.getpid() and _scheduler.running:
        return _scheduler
    return None


def start_background() -> InProcessScheduler | None:
    """Start the in-process scheduler once per process when GATEWAY_SCHEDULER resolves to inprocess."""
    global _scheduler, _scheduler_pid
    if scheduler_mode() != "inprocess":
        return None
    with _lock:
        # After a fork (a pre-forking server) the child has the parent's object but none of its threads.
        if _scheduler is None or _scheduler_pid != os.getpid():
            _scheduler, _scheduler_pid = InProcessScheduler(), os.getpid()
            _scheduler.start()
            atexit.register(_scheduler.stop, 5.0)
            logger.info(
                "in-process scheduler started (tick %g s, %d workers)", _scheduler.tick_seconds, _scheduler.workers
            )
        return _scheduler


def stop_background() -> None:
    """Stop this process's in-process scheduler (tests, shutdown)."""
    global _scheduler, _scheduler_pid
    with _lock:
        scheduler, _scheduler, _scheduler_pid = _scheduler, None, None
    if scheduler is not None:
        scheduler.stop()


def enqueue(job: str, gateway_id: int, **options: Any) -> None:
    """Run ``job`` ("check" or "sync") for the gateway soon, off the caller's request: on this process's
    scheduler pool, else as a Celery task (GATEWAY_SCHEDULER celery), else inline."""
    if job not in JOBS:
        raise ValueError(f"Unknown job {job!r}: use one of {', '.join(JOBS)}.")
    scheduler = running_scheduler()
    if scheduler is not None:
        scheduler.submit(job, gateway_id, **options)
        return
    if scheduler_mode() == "celery":
        from federation import tasks

        try:
            if job == CHECK:
                tasks.check_gateway.delay(gateway_id)
            else:
                tasks.sync_gateway.delay(gateway_id, str(options.get("trigger", SyncTrigger.SCHEDULE)))
        except Exception as exc:  # the broker is down: the next tick finds the work due again
            logger.warning("could not queue the %s of gateway %s: %s", job, gateway_id, exc)
        return
    _run_inline(lambda: run_job(job, gateway_id, **options))


def _run_inline(work: Callable[[], object]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        work()
        return

    # Called on an event loop's thread (an async receiver), where the ORM may not run: a thread of its own.
    def in_thread() -> None:
        try:
            work()
        finally:
            connection.close()

    threading.Thread(target=in_thread, name="gateway-job-inline", daemon=True).start()


def on_check_requested(sender: Any = None, *, gateway_id: int, **kwargs: Any) -> None:
    """registry.hooks.gateway_check_requested receiver (the admin's "Check now")."""
    enqueue(CHECK, gateway_id)


def on_sync_requested(sender: Any = None, *, gateway_id: int, **kwargs: Any) -> None:
    """registry.hooks.gateway_sync_requested receiver (the admin's "Sync now")."""
    enqueue(SYNC, gateway_id, trigger=kwargs.get("trigger") or SyncTrigger.MANUAL)
