"""Supervised stdio servers: the child processes of the serving process (docs/federation.md, section 6).

The pool keeps one stdio client per key (the gateway, the capability profile, the era, and the user for a
gateway with ``per_user_process``); each key is a ``Unit`` here, with at most one process. A unit's process is

- started on first use (or at boot, ``pin``ned: never stopped for being idle);
- restarted in the background when it dies: at once the first time (a process that ran and died once is
  most likely fine when started again; the calls that follow should not fail for it), then after 1 s, 2, 4,
  ... up to ``max_backoff`` while it keeps dying, and after 1 s, 2, 4, ... from the start when it cannot
  even start. The count starts again once a process has stayed up ``stable_after`` s. A call that arrives
  during a wait fails at once with the reason and the wait ("the process exited with code 1; restarting in
  4 s; last stderr: ...");
- killed and restarted when it hangs: after a call times out, a ``ping`` must be answered within
  ``hang_probe_timeout`` s (any answer will do, even an error);
- stopped after ``idle_timeout`` s without calls (0: never);
- one of at most ``max_processes`` running: starting another stops the least recently used idle one, or is
  refused with a sentence naming GATEWAY_STDIO_MAX_PROCESSES when all are busy.

Each change of state goes out on ``hooks.upstream_process_changed`` (in order, the latest state of a unit
replacing one not yet sent); ``states()`` is this process's snapshot. No Django here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from transports.protocol import hooks
from transports.protocol.upstream.base import (
    NotificationHandler,
    UpstreamConfig,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from transports.protocol.upstream.stdio import StdioClient

logger = logging.getLogger(__name__)

STARTING, RUNNING, RESTARTING, STOPPED = "starting", "running", "restarting", "stopped"
FIRST_BACKOFF = 1.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def describe_exit(code: int | None) -> str:
    """How a process ended, as a sentence: "the process exited with code 1", "... was killed by SIGKILL"."""
    if code is None:
        return "the process closed its stdout"
    if code < 0:
        try:
            return f"the process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the process was killed by signal {-code}"
    return f"the process exited with code {code}"


def unit_label(key: str) -> str:
    """Which process of a gateway a pool key names, for people: "shared", "user alice", with its profile and era."""
    parts = key.split("\x00")[1:]
    label = "shared"
    extra: list[str] = []
    for part in parts:
        if part.startswith("user="):
            label = f"user {part[5:]}"
        elif part.startswith("era="):
            extra.append(f"{part[4:]} era")
        else:
            extra.append("profile " + hashlib.sha1(part.encode(), usedforsecurity=False).hexdigest()[:8])
    return label + (f" ({', '.join(extra)})" if extra else "")


def _user_of(key: str) -> str | None:
    for part in key.split("\x00")[1:]:
        if part.startswith("user="):
            return part[5:]
    return None


@dataclass(eq=False)
class Unit:
    """One supervised process slot: its client, its state, and what is known about its last exit."""

    key: str
    name: str
    config: UpstreamConfig
    sink: NotificationHandler | None = None
    client: StdioClient | None = None
    state: str = STOPPED
    pinned: bool = False  # started at boot: not stopped for being idle
    restarts: int = 0
    failures: int = 0  # exits in a row without a stable run: the backoff's exponent
    immediate: bool = False  # this run of failures began with a restart at once (not counted in the exponent)
    since: str = field(default_factory=_now)
    started_at: float = 0.0  # monotonic, while running
    last_used: float = field(default_factory=time.monotonic)
    exit_head: str | None = None  # "the process exited with code 1"
    exit_tail: str = ""  # its last stderr lines
    exit_code: int | None = None
    backoff: float = 0.0
    retry_at: float = 0.0
    reason: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    restart: asyncio.Task[None] | None = None
    probing: bool = False

    @property
    def holds_process(self) -> bool:
        return self.state in (STARTING, RUNNING)

    @property
    def busy(self) -> bool:
        return self.client is not None and self.client.busy

    @property
    def last_active(self) -> float:
        return max(self.last_used, self.client.last_active if self.client is not None else 0.0)

    @property
    def last_exit(self) -> str | None:
        if self.exit_head is None:
            return None
        return self.exit_head + (f"; last stderr: {self.exit_tail}" if self.exit_tail else "")


class StdioSupervisor:
    """The stdio processes of this serving process (see the module docstring)."""

    def __init__(
        self,
        *,
        max_processes: int = 32,
        idle_timeout: float = 600.0,
        max_backoff: float = 60.0,
        stable_after: float = 30.0,
        hang_probe_timeout: float = 5.0,
    ) -> None:
        self.max_processes = max_processes
        self.idle_timeout = idle_timeout
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.hang_probe_timeout = hang_probe_timeout
        self.host = socket.gethostname()
        self._units: dict[str, Unit] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._outbox: dict[str, tuple[str, dict[str, Any]]] = {}
        self._publisher: asyncio.Task[None] | None = None
        self._closed = False

    # -- what callers use ------------------------------------------------------------------------

    async def client(self, *, key: str, config: UpstreamConfig, sink: NotificationHandler | None = None) -> StdioClient:
        """The connected client of the process of ``key``, started (or restarted) when needed.

        Raises UpstreamUnavailable with a sentence: the process cannot start or died at once (a restart
        is scheduled), it is waiting for its restart, or the process limit is reached and all are busy."""
        if self._closed:
            raise UpstreamUnavailable(f"{config.name}: the gateway is shutting down")
        unit = self._units.get(key)
        if unit is not None and unit.config != config:
            await self.stop(key, reason="its settings changed")
            unit = None
        if unit is None:
            unit = self._units[key] = Unit(key=key, name=config.name, config=config)
            self._forget_old()
        unit.sink = sink
        unit.last_used = time.monotonic()
        self._watch_idle()
        if unit.state == RUNNING and unit.client is not None and unit.client.connected:
            return unit.client
        async with unit.lock:
            if unit.state == RUNNING and unit.client is not None and unit.client.connected:
                return unit.client
            if self._closed:
                raise UpstreamUnavailable(f"{config.name}: the gateway is shutting down")
            if unit.state == RESTARTING and time.monotonic() < unit.retry_at:
                raise UpstreamUnavailable(self._waiting(unit))
            return await self._start(unit)

    def pin(self, key: str) -> None:
        """Keep the process of ``key`` running when idle (a gateway started at boot)."""
        unit = self._units.get(key)
        if unit is not None:
            unit.pinned = True

    async def stop(self, key: str, *, reason: str = "stopped") -> None:
        """Stop the process of ``key`` (if any) and forget the unit."""
        unit = self._units.pop(key, None)
        if unit is not None:
            client = self._detach(unit, reason)
            if client is not None:
                await self._close_client(client)

    def states(self) -> list[dict[str, Any]]:
        """The state of every unit of this process (as sent on ``upstream_process_changed``), plus its gateway."""
        return [{"gateway": unit.name, **self.state_of(unit)} for unit in self._units.values()]

    def state_of(self, unit: Unit) -> dict[str, Any]:
        """What is reported about a unit: state, pid, restarts, since, last_exit, host, and where it runs."""
        client = unit.client
        pid = client.pid if client is not None and unit.state == RUNNING else None
        label = unit_label(unit.key)
        return {
            "state": unit.state,
            "pid": pid,
            "restarts": unit.restarts,
            "since": unit.since,
            "last_exit": unit.last_exit,
            "exit_code": unit.exit_code,
            "backoff": unit.backoff if unit.state == RESTARTING else None,
            "reason": unit.reason,
            "host": self.host,
            "gateway_pid": os.getpid(),
            "user": _user_of(unit.key),
            "process": label,
            "instance": f"{self.host}:{os.getpid()}:{label}",
        }

    async def aclose(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL, to each process group) and the background tasks."""
        self._closed = True
        for task in [self._reaper, *self._tasks]:
            if task is not None:
                task.cancel()
        clients = [
            client
            for unit in list(self._units.values())
            if (client := self._detach(unit, "stopped: the gateway is shutting down")) is not None
        ]
        await asyncio.gather(*(self._close_client(client) for client in clients))
        if self._publisher is not None and not self._publisher.done():
            await asyncio.wait({self._publisher}, timeout=5.0)

    # -- starting, dying, restarting -------------------------------------------------------------

    async def _start(self, unit: Unit) -> StdioClient:
        """Start the unit's process (its lock held); on failure record the exit and schedule a restart."""
        previous, unit.client = unit.client, None
        if previous is not None:
            await self._close_client(previous)
        restarting = unit.state == RESTARTING
        victims = self._make_room(unit)  # refuses, or marks the unit STARTING
        await asyncio.gather(*(self._close_client(client) for client in victims))
        if restarting:
            unit.restarts += 1
        self._publish(unit)
        client = StdioClient(unit.config)
        client.set_notification_handler(unit.sink)
        client.on_exit = lambda code, reason: self._died(unit, client, code)
        client.on_timeout = lambda: self._timed_out(unit, client)
        try:
            await client.connect()
        except UpstreamUnavailable as exc:
            await self._close_client(client)
            head = describe_exit(client.exit_code) if client.exit_code is not None else _strip(str(exc), unit.name)
            tail = " | ".join(client.stderr_tail)
            raise UpstreamUnavailable(self._failed(unit, head, tail, client.exit_code)) from None
        except BaseException:
            await self._close_client(client)
            unit.state = STOPPED
            raise
        unit.client = client
        unit.state = RUNNING
        unit.started_at = time.monotonic()
        unit.since = _now()
        unit.reason = ""
        logger.info("%s: stdio process %s started (%s)", unit.name, client.pid, unit_label(unit.key))
        self._publish(unit)
        return client

    def _make_room(self, unit: Unit) -> list[StdioClient]:
        """Stop the least recently used idle processes beyond the limit (their clients are returned to
        close), or refuse; without an await between the count and the marking, so starts never overshoot."""
        live = [other for other in self._units.values() if other is not unit and other.holds_process]
        victims: list[StdioClient] = []
        excess = len(live) - self.max_processes + 1
        if excess > 0:
            idle = sorted((u for u in live if u.state == RUNNING and not u.busy), key=lambda u: u.last_active)
            if len(idle) < excess:
                raise UpstreamUnavailable(
                    f"{unit.name}: cannot start the stdio process: {self.max_processes} are running and busy "
                    f"(GATEWAY_STDIO_MAX_PROCESSES={self.max_processes}); try again shortly, or raise "
                    "GATEWAY_STDIO_MAX_PROCESSES"
                )
            for other in idle[:excess]:
                logger.info("%s: stopping the idle stdio process to make room for %s", other.name, unit.name)
                client = self._detach(other, f"stopped to make room for {unit.name} (GATEWAY_STDIO_MAX_PROCESSES)")
                if client is not None:
                    victims.append(client)
        unit.state = STARTING
        unit.since = _now()
        return victims

    def _died(self, unit: Unit, client: StdioClient, code: int | None) -> None:
        """The reader saw the process end on its own: record it and restart after the backoff."""
        if unit.client is not client or self._closed:
            return
        head = describe_exit(code)
        self._failed(unit, head, " | ".join(client.stderr_tail), code)
        logger.warning("%s: stdio process died (%s); restarting in %g s", unit.name, head, unit.backoff)
        unit.client = None
        self._spawn(self._close_client(client))  # now: what it left in its process group goes too

    def _failed(self, unit: Unit, head: str, tail: str, code: int | None = None) -> str:
        """Record an exit (or a failed start), schedule the restart; returns the sentence for callers."""
        now = time.monotonic()
        ran = bool(unit.started_at)  # it was running (this is an exit, not a failed start)
        if ran and now - unit.started_at >= self.stable_after:
            unit.failures, unit.immediate = 0, False  # it ran long enough: this exit starts the backoff again
        unit.failures += 1
        if ran and unit.failures == 1:
            unit.immediate, unit.backoff = True, 0.0
        else:
            exponent = unit.failures - (2 if unit.immediate else 1)
            unit.backoff = min(FIRST_BACKOFF * 2**exponent, self.max_backoff)
        unit.retry_at = now + unit.backoff
        unit.state = RESTARTING
        unit.started_at = 0.0
        unit.since = _now()
        unit.exit_head, unit.exit_tail = head, tail
        unit.exit_code = code
        unit.reason = ""
        if unit.restart is not None:
            unit.restart.cancel()
        unit.restart = self._spawn(self._restart_later(unit, unit.backoff))
        self._publish(unit)
        return self._waiting(unit)

    def _waiting(self, unit: Unit) -> str:
        left = unit.retry_at - time.monotonic()
        when = f"restarting in {max(1, math.ceil(left))} s" if left > 0 else "restarting now"
        sentence = f"{unit.name}: {unit.exit_head}; {when}"
        return sentence + (f"; last stderr: {unit.exit_tail}" if unit.exit_tail else "")

    async def _restart_later(self, unit: Unit, delay: float) -> None:
        await asyncio.sleep(delay)
        async with unit.lock:
            if unit.state != RESTARTING or self._units.get(unit.key) is not unit or self._closed:
                return  # a caller restarted it already, or it was stopped
            if self._idle(unit, time.monotonic()):
                await self._halt(unit, self._idle_reason())
                return
            with contextlib.suppress(UpstreamUnavailable):  # recorded, and the next restart scheduled
                await self._start(unit)

    def _timed_out(self, unit: Unit, client: StdioClient) -> None:
        """A call timed out: find out, with a ping, whether the process still reads its stdin."""
        if unit.client is client and not unit.probing and not self._closed:
            unit.probing = True
            self._spawn(self._probe(unit, client))

    async def _probe(self, unit: Unit, client: StdioClient) -> None:
        try:
            try:
                await client.call("ping", None, timeout=self.hang_probe_timeout, on_message=None)
            except UpstreamError:
                return  # an error is an answer: it is alive
            except UpstreamTimeout:
                pass
            except UpstreamUnavailable:
                return  # it died: the reader reports that
            else:
                return
            async with unit.lock:
                if unit.client is not client:
                    return
                logger.warning(
                    "%s: stdio process %s stopped answering (ping unanswered for %g s): killing it",
                    unit.name,
                    client.pid,
                    self.hang_probe_timeout,
                )
                head = (
                    f"the process stopped answering (a call timed out, then a ping got no answer within "
                    f"{self.hang_probe_timeout:g} s) and was killed"
                )
                self._failed(unit, head, " | ".join(client.stderr_tail))
                unit.client = None
                await self._close_client(client)
        finally:
            unit.probing = False

    # -- stopping --------------------------------------------------------------------------------

    def _detach(self, unit: Unit, reason: str) -> StdioClient | None:
        """Mark the unit stopped and hand back its client for closing."""
        if unit.restart is not None:
            unit.restart.cancel()
            unit.restart = None
        client, unit.client = unit.client, None
        was = unit.state
        unit.state = STOPPED
        unit.failures = 0
        unit.started_at = 0.0
        unit.reason = reason
        if was != STOPPED:
            unit.since = _now()
            self._publish(unit)
        return client

    async def _halt(self, unit: Unit, reason: str) -> None:
        client = self._detach(unit, reason)
        if client is not None:
            logger.info("%s: stdio process %s %s", unit.name, client.pid, reason)
            await self._close_client(client)

    def _idle_reason(self) -> str:
        return f"stopped after {self.idle_timeout:g} s unused (GATEWAY_STDIO_IDLE_TIMEOUT)"

    def _idle(self, unit: Unit, now: float) -> bool:
        if self.idle_timeout <= 0 or unit.pinned or unit.busy:
            return False
        return now - unit.last_active >= self.idle_timeout

    def _watch_idle(self) -> None:
        if self.idle_timeout > 0 and (self._reaper is None or self._reaper.done()) and not self._closed:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    async def _reap_idle(self) -> None:
        interval = min(max(self.idle_timeout / 4, 0.05), 5.0)
        while not self._closed:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for unit in list(self._units.values()):
                if unit.state in (RUNNING, RESTARTING) and not unit.lock.locked() and self._idle(unit, now):
                    await self._halt(unit, self._idle_reason())

    def _forget_old(self) -> None:
        """Units are kept for their state; stopped ones beyond a bound go (many users of a per-user gateway)."""
        stopped = [unit for unit in self._units.values() if unit.state == STOPPED and not unit.lock.locked()]
        for unit in stopped[: max(0, len(self._units) - 4 * self.max_processes)]:
            self._units.pop(unit.key, None)

    # -- plumbing --------------------------------------------------------------------------------

    async def _close_client(self, client: StdioClient) -> None:
        client.on_exit = None
        client.on_timeout = None
        try:
            await client.aclose()
        except Exception:
            logger.debug("error closing a stdio client", exc_info=True)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _publish(self, unit: Unit) -> None:
        """Queue the unit's state for ``upstream_process_changed``; one sender, so receivers see the order."""
        if not hooks.upstream_process_changed.connected:
            return
        state = self.state_of(unit)
        self._outbox.pop(state["instance"], None)  # the newer state goes to the back of the line
        self._outbox[state["instance"]] = (unit.name, state)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.get_running_loop().create_task(self._send_states())

    async def _send_states(self) -> None:
        while self._outbox:
            instance = next(iter(self._outbox))
            name, state = self._outbox.pop(instance)
            await hooks.upstream_process_changed.send(name, state)


def _strip(message: str, name: str) -> str:
    """An UpstreamUnavailable message without the gateway's name in front (the sentence adds it again)."""
    prefix = f"{name}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
