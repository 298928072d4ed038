"""This process among the gateway's replicas: messages between them over the Channels layer.

Each replica has a short random ``tag`` and one channel on the layer, which joins the group
``mcp-r-<tag>`` (messages for this replica) and ``mcp-all`` (messages for every replica). On top of
that, ``Mesh`` gives:

- ``call``: ask the replica ``tag`` to run a registered handler and wait for its reply; what the
  handler emits on the way (progress, a question for the client) comes back in order before it;
- ``send`` / ``broadcast``: fire-and-forget messages to one replica or to all;
- ``watch``: wake-ups for readers of a session's event log, from whichever replica appends to it
  (the group ``mcp-w-<session id>``).

Nothing here knows MCP; the protocol core registers its handlers (docs/replicas.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

ALL = "mcp-all"
Emit = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[dict[str, Any], Emit], Awaitable[dict[str, Any] | None]]
Notice = Callable[[dict[str, Any]], Awaitable[None]]


class ReplicaGone(Exception):
    """The replica that holds what a request needs did not answer."""


class ReplicaFailed(ReplicaGone):
    """The replica took the request and answered with an error: it is there, its handler failed."""


def replica_group(tag: str) -> str:
    return f"mcp-r-{tag}"


def wake_group(session_id: str) -> str:
    return f"mcp-w-{session_id}"


class Mesh:
    """Request/reply, notices and wake-ups between replicas, over one channel of this process."""

    def __init__(self, layer: Any, *, tag: str | None = None) -> None:
        self.layer = layer
        self.tag = tag or secrets.token_hex(4)
        self.handlers: dict[str, Handler] = {}  # run for ``call``
        self.notices: dict[str, Notice] = {}  # run for ``send`` and ``broadcast``
        self._channel: str | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._calls: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._watchers: dict[tuple[str, str], set[asyncio.Event]] = {}
        self._watched: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.handlers["ping"] = _pong

    @property
    def started(self) -> bool:
        return self._started is not None and self._started.done() and self._started.exception() is None

    async def start(self) -> None:
        """Join the layer (once; later calls wait for the first)."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                self._channel = await self.layer.new_channel()
                await self.layer.group_add(replica_group(self.tag), self._channel)
                await self.layer.group_add(ALL, self._channel)
                self._loop_task = asyncio.ensure_future(self._receive())
                self._started.set_result(None)
            except BaseException as exc:
                self._started.set_exception(exc)
                started, self._started = self._started, None
                started.exception()  # consumed
                raise
        await asyncio.shield(self._started)

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        for task in list(self._tasks):
            task.cancel()

    # -- outgoing -----------------------------------------------------------------------------

    async def call(
        self,
        tag: str,
        kind: str,
        body: dict[str, Any],
        *,
        timeout: float,
        emit: Emit | None = None,
        ack_timeout: float = 5.0,
    ) -> dict[str, Any] | None:
        """Run handler ``kind`` on replica ``tag``; its emitted messages go to ``emit``. Raises
        ReplicaGone when the replica does not take the call within ``ack_timeout`` seconds or
        nothing more comes back for ``timeout`` seconds."""
        await self.start()
        rid = secrets.token_hex(8)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._calls[rid] = queue
        try:
            await self.layer.group_send(
                replica_group(tag), {"type": "mcp.call", "kind": kind, "rid": rid, "from": self.tag, "body": body}
            )
            wait = ack_timeout
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    raise ReplicaGone(f"replica {tag} did not answer within {wait:g} s") from None
                wait = timeout
                if item["type"] == "mcp.ack":
                    continue
                if item["type"] == "mcp.emit":
                    if emit is not None:
                        await emit(item["message"])
                    continue
                if "error" in item:
                    raise ReplicaFailed(f"replica {tag} failed: {item['error']}")
                result: dict[str, Any] | None = item.get("result")
                return result
        finally:
            self._calls.pop(rid, None)

    async def reachable(self, tag: str, timeout: float = 5.0) -> bool:
        """Whether the replica ``tag`` answers within ``timeout`` seconds. True when the layer itself fails:
        only a replica known to be gone counts as gone."""
        try:
            await self.call(tag, "ping", {}, timeout=timeout, ack_timeout=timeout)
        except ReplicaFailed:  # a replica without "ping" (an older release, mid-upgrade) is still there
            return True
        except ReplicaGone:
            return False
        except Exception:
            logger.warning("cannot tell whether replica %s is alive", tag, exc_info=True)
        return True

    async def send(self, tag: str, kind: str, body: dict[str, Any]) -> None:
        await self.start()
        await self.layer.group_send(replica_group(tag), {"type": "mcp.notice", "kind": kind, "body": body})

    async def broadcast(self, kind: str, body: dict[str, Any]) -> None:
        await self.start()
        await self.layer.group_send(ALL, {"type": "mcp.notice", "kind": kind, "body": body})

    async def wake(self, session_id: str, stream_id: str) -> None:
        """Tell the readers of a session's log on every replica that it grew."""
        self._wake_local(session_id, stream_id)
        await self.start()
        await self.layer.group_send(wake_group(session_id), {"type": "mcp.wake", "sid": session_id, "st": stream_id})

    # -- wake-ups -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def watch(self, session_id: str, stream_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the session's log ``stream_id`` grows (on any replica)."""
        await self.start()
        event = asyncio.Event()
        key = (session_id, stream_id)
        self._watchers.setdefault(key, set()).add(event)
        count = self._watched.get(session_id, 0)
        self._watched[session_id] = count + 1
        if not count:
            await self.layer.group_add(wake_group(session_id), self._channel)
        try:
            yield event
        finally:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[key]
            left = self._watched.get(session_id, 1) - 1
            if left:
                self._watched[session_id] = left
            else:
                self._watched.pop(session_id, None)
                with contextlib.suppress(Exception):
                    await self.layer.group_discard(wake_group(session_id), self._channel)

    def _wake_local(self, session_id: str, stream_id: str) -> None:
        for event in self._watchers.get((session_id, stream_id), ()):
            event.set()

    # -- incoming -----------------------------------------------------------------------------

    async def _receive(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self._channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("replica channel receive failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            try:
                self._dispatch(message)
            except Exception:
                logger.exception("bad replica message %r", message.get("type"))

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "mcp.wake":
            self._wake_local(message["sid"], message["st"])
        elif kind in ("mcp.ack", "mcp.emit", "mcp.reply"):
            queue = self._calls.get(message["rid"])
            if queue is not None:
                queue.put_nowait(message)
        elif kind == "mcp.call":
            self._spawn(self._serve(message))
        elif kind == "mcp.notice":
            notice = self.notices.get(message["kind"])
            if notice is not None:
                self._spawn(notice(message["body"]))

    async def _serve(self, message: dict[str, Any]) -> None:
        rid, origin = message["rid"], message["from"]
        group = replica_group(origin)

        async def emit(item: dict[str, Any]) -> None:
            await self.layer.group_send(group, {"type": "mcp.emit", "rid": rid, "message": item})

        await self.layer.group_send(group, {"type": "mcp.ack", "rid": rid})
        reply: dict[str, Any] = {"type": "mcp.reply", "rid": rid}
        handler = self.handlers.get(message["kind"])
        try:
            if handler is None:
                raise LookupError(f"no handler {message['kind']!r}")
            reply["result"] = await handler(message["body"], emit)
        except Exception as exc:
            logger.exception("replica handler %s failed", message.get("kind"))
            reply["error"] = str(exc) or type(exc).__name__
        await self.layer.group_send(group, reply)

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _pong(body: dict[str, Any], emit: Emit) -> dict[str, Any]:
    return {}
