"""Declared extension points of the protocol core.

Other apps react to what the core sees by connecting a receiver in their ``AppConfig.ready()``
(``hooks.upstream_lists_changed.connect(fn)``); the core never imports them and nobody sets a module
global from outside. Receivers are coroutines; one that fails is logged and does not stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

Receiver = Callable[..., Awaitable[None]]


class Hook:
    """A named list of async receivers, called in the order they were connected."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._receivers: list[Receiver] = []

    def connect(self, receiver: Receiver) -> None:
        """Add ``receiver`` (once: connecting it again changes nothing)."""
        if receiver not in self._receivers:
            self._receivers.append(receiver)

    def disconnect(self, receiver: Receiver) -> None:
        if receiver in self._receivers:
            self._receivers.remove(receiver)

    @property
    def connected(self) -> bool:
        return bool(self._receivers)

    async def send(self, *args: Any) -> None:
        for receiver in list(self._receivers):
            try:
                await receiver(*args)
            except Exception:
                logger.warning("hook %s: receiver %r failed", self.name, receiver, exc_info=True)


# An upstream said its tools, prompts or resources changed (arguments: the gateway's name, and the pool
# of upstream connections the notice came through, to read the new lists on). Federation re-reads the
# upstream; the catalog change that follows sends the gateway's own list_changed.
upstream_lists_changed = Hook("upstream_lists_changed")

# A request to an upstream failed on the connection (refused, reset, TLS, process died, timed out;
# not an error the upstream answered). Arguments: the gateway's name and the failure as a sentence.
# Federation marks a healthy gateway degraded at once (a passive health signal).
upstream_failed = Hook("upstream_failed")

# A supervised stdio server changed state (started, exited, restarting, stopped idle). Arguments: the
# gateway's name and {"state", "pid", "restarts", "since", "last_exit", "host"}. Federation records it.
upstream_process_changed = Hook("upstream_process_changed")


@dataclass(frozen=True, slots=True)
class ToolCalled:
    """One finished tools/call: who (username, virtual server or None for /mcp, session id or "" for a
    2026-07-28 request), which tool ("" when the name matched none) of which gateway ("" when local), the
    outcome ("ok", "error": a JSON-RPC error or an isError result, "cancelled"), the JSON-RPC error's
    message or "", the duration in seconds, the wall-clock time it ended, and the arguments as sent."""

    username: str
    server: str | None
    session: str
    tool: str
    gateway: str
    outcome: str
    error: str
    seconds: float
    ended_at: float
    arguments: Any


# A tools/call finished (argument: a ToolCalled). Sent only while a receiver is connected, so it costs a
# call nothing otherwise; receivers must be quick (queue the record, write it elsewhere): they run on the
# call's path. The audit log records calls from it.
tool_called = Hook("tool_called")
