"""Session-era sessions kept in Redis, so that any replica can take any request of a session.

What a session negotiated lives in a Redis hash ``<prefix>s:<id>`` that expires after the idle
timeout (refreshed as the session is used); the logs of its SSE streams are Redis streams, numbered
by a counter, so ``Last-Event-ID`` resumes on any replica; readers are woken over the Channels layer
(``Mesh.watch``). Per process remain only what cannot travel: the tasks of the calls this replica
runs and the futures of its questions to the client (an answer posted elsewhere is forwarded here,
see ``McpCore``), and the HTTP+SSE / WebSocket connections it holds (their sessions are recorded
here with their ``owner`` so a POST to another replica reaches them). docs/replicas.md has the whole
picture.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from transports.protocol import jsonrpc, redis_client
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.replicas import Mesh
from transports.protocol.session_scripts import CLAIM_SECONDS, SCRIPTS
from transports.protocol.sessions import (
    EVENTS_PER_STREAM,
    STANDALONE_STREAM_ID,
    EventLog,
    Session,
    SessionLimitReached,
    SessionStoreUnavailable,
    per_user_limit_message,
)

logger = logging.getLogger(__name__)

LOCAL_CACHE = 10_000  # sessions whose objects this process keeps between requests
STANDALONE_KEEP = 64
# Seconds a session's local copy is trusted without reading Redis. Changes made by another replica
# arrive sooner as a `session.changed` notice; this only bounds the damage of a lost notice.
REVALIDATE_SECONDS = 5.0

# What a client resuming a request stream gets when the replica running the request is gone: the request ran,
# or not, on a process that no longer exists, and nothing else will ever answer it.
ORPHANED = (
    "The gateway replica that was running this request has stopped; its outcome is unknown. "
    "Send the request again if it is safe to repeat."
)


def _store_call[**P, R](method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Redis out of reach (stopped, restarting, the network) becomes SessionStoreUnavailable, which every adapter
    answers with 503; a live stream keeps going without its log (see transports/streamable_http.py)."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, ConnectionError) as exc:
            logger.warning("the session store (Redis) cannot be reached: %s", exc)
            raise SessionStoreUnavailable() from exc

    return call


class RedisLog:
    """An ``EventLog`` in a Redis stream: entry ids are '<sequence>-1'; an entry with field 'd'
    marks the end of a request stream."""

    def __init__(
        self, store: RedisSessionStore, session_id: str, stream_id: str, keep: int, *, runner: str = ""
    ) -> None:
        self.store, self.session_id, self.id, self.keep = store, session_id, stream_id, keep
        self._index = f"{store.prefix}e:{session_id}"
        base = f"{self._index}:{stream_id}"
        self._log, self._counter, self._readers = base, base + ":n", base + ":r"
        # A request stream's runner record (JSON: the replica tag running the request and the request's id),
        # written with its events, so a replica resuming the stream can tell when nobody will ever finish it.
        self._runner, self._runner_key = runner, base + ":w"

    @_store_call
    async def _add(self, field: str, payload: bytes, last: bool = False) -> int:
        store = self.store
        seq, readers = await store.run_script(
            "append",
            [self._log, self._counter, self._readers, self._runner_key, store._key(self.session_id), self._index],
            [
                field,
                payload,
                int(store.idle_timeout) + 60,
                self.keep,
                "1" if last else "0",
                self._runner,
                self.id,
                time.time(),
            ],
        )
        if not seq:
            return 0  # the session has ended
        if readers:
            await store.mesh.wake(self.session_id, self.id)
        else:
            store.mesh._wake_local(self.session_id, self.id)
        return int(seq)

    async def append(self, message: dict[str, Any], *, last: bool = False) -> str:
        return f"{self.id}:{await self._add('m', jsonrpc.dumps(message), last)}"

    async def finish(self) -> None:
        await self._add("d", b"1")

    @_store_call
    async def read(self, after: int) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
        entries = await self.store.redis().xrange(self._log, f"{after + 1}-0", "+")
        events: list[tuple[int, dict[str, Any]]] = []
        done = False
        for entry_id, fields in entries:
            if b"d" in fields:
                done = True
                continue
            events.append((int(entry_id.split(b"-")[0]), json.loads(fields[b"m"])))
        return events, done

    @_store_call
    async def position(self) -> int:
        value = await self.store.redis().get(self._counter)
        return int(value or 0)

    @_store_call
    async def exists(self) -> bool:
        return bool(await self.store.redis().exists(self._counter))

    @_store_call
    async def end_if_orphaned(self) -> bool:
        """End a request stream whose request runs on a replica that no longer answers with the error response
        its client waits for (once, whichever replica finds it first); True when this call ended it."""
        if self.id == STANDALONE_STREAM_ID:
            return False
        store = self.store
        raw = await store.redis().get(self._runner_key)
        if raw is None:
            return False  # the standalone stream, or a request stream from before runners were recorded
        runner = json.loads(raw)
        if runner.get("tag") == store.mesh.tag:
            return False
        last = await store.redis().xrevrange(self._log, count=1)
        if last and b"d" in last[0][1]:
            return False  # answered meanwhile
        if await store.mesh.reachable(str(runner.get("tag"))):
            return False
        if not await store.redis().set(self._runner_key + "x", 1, nx=True, ex=int(store.idle_timeout) + 60):
            return False
        logger.warning(
            "replica %s is gone: request %r of session %s ends with an error",
            runner.get("tag"),
            runner.get("id"),
            self.session_id,
        )
        await self.append(
            jsonrpc.error_response(runner.get("id"), JsonRpcError(jsonrpc.SERVER_ERROR, ORPHANED)), last=True
        )
        return True

    @_store_call
    async def wait(self, after: int, timeout: float) -> bool:
        async with self.store.mesh.watch(self.session_id, self.id) as grew:
            await self.store.redis().set(self._readers, 1, ex=int(timeout) + 5)
            if await self.position() > after:
                return True
            try:
                await asyncio.wait_for(grew.wait(), timeout)
            except TimeoutError:
                return False
            return True


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("removing a session from Redis failed", exc_info=task.exception())


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class RedisSessionStore:
    """Sessions shared by the replicas (see the module docstring); the same methods as
    ``transports.protocol.sessions.SessionStore``."""

    def __init__(
        self,
        url: str,
        mesh: Mesh,
        *,
        idle_timeout: float = 3600.0,
        max_sessions: int = 10_000,
        max_per_user: int = 0,
        prefix: str = "mcpgw:",
    ) -> None:
        self.url = url
        self.mesh = mesh
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self.max_per_user = max_per_user
        self.prefix = prefix
        self._local: OrderedDict[str, Session] = OrderedDict()
        self._refreshed: dict[str, float] = {}
        self._client: aioredis.Redis | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._validated: dict[str, float] = {}
        self._scripts: dict[str, Any] = {}
        self._script_client: aioredis.Redis | None = None
        mesh.notices["session.ended"] = self._ended
        mesh.notices["session.changed"] = self._changed
        # Called with the id of a session this replica learns has ended (deleted here or on another
        # replica, or found expired); the id may name a session this replica holds no object for.
        self.on_end: Callable[[str], None] | None = None

    def __len__(self) -> int:
        return len(self._local)

    def redis(self) -> Any:  # redis.asyncio.Redis (its type hints do not follow decode_responses)
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = redis_client.async_client(self.url)
            self._client_loop = loop
        return self._client

    async def run_script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        client = self.redis()
        if self._script_client is not client:
            self._scripts = {name: client.register_script(source) for name, source in SCRIPTS.items()}
            self._script_client = client
        return await self._scripts[name](keys=keys, args=args)

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}s:{session_id}"

    # -- life cycle ---------------------------------------------------------------------------

    @_store_call
    async def create(self, *, connection: bool = False, **fields: Any) -> Session:
        self._shed_idle()
        username = fields["username"]
        session = Session(
            id=secrets.token_urlsafe(24),
            shared=not connection,
            owner=self.mesh.tag if connection else None,
            **fields,
        )
        now = time.time()
        record = [item for pair in self._record(session).items() for item in pair]
        bounds = [self.max_sessions, self.max_per_user, int(self.idle_timeout)]
        refused = await self.run_script(
            "create",
            [f"{self.prefix}all", f"{self.prefix}u:{username}", self._key(session.id)],
            [now, now + self.idle_timeout, *bounds, session.id, self.prefix, *record],
        )
        if refused == 1:
            raise SessionLimitReached(
                f"the gateway holds its maximum of {self.max_sessions} sessions (GATEWAY_MAX_SESSIONS)"
            )
        if refused == 2:
            raise SessionLimitReached(per_user_limit_message(username, self.max_per_user), 429)
        self._remember(session)
        self._refreshed[session.id] = self._validated[session.id] = time.monotonic()
        return session

    def _record(self, session: Session) -> dict[str, str]:
        return {
            "u": session.username,
            "sc": _dump(sorted(session.scopes)),
            "sv": _dump(session.server),
            "pv": session.protocol_version,
            "cc": _dump(session.client_capabilities),
            "ci": _dump(session.client_info),
            "in": "1" if session.initialized else "0",
            "ll": session.log_level or "",
            "sub": _dump(sorted(session._subscriptions or ())),
            "own": session.owner or "",
        }

    @_store_call
    async def get(self, session_id: str) -> Session | None:
        session = self._local.get(session_id)
        now = time.monotonic()
        if (
            session is not None
            and not session.closed
            and (
                session.owner == self.mesh.tag  # a connection of ours: alive while it is open
                or now - self._validated.get(session_id, 0.0) < REVALIDATE_SECONDS
            )
        ):
            session.last_seen = now
            self._local.move_to_end(session_id)
            await self._refresh(session)  # finds out when it expired meanwhile
            return None if session.closed else session
        try:
            record = await self.redis().hgetall(self._key(session_id))
        except ValueError:  # an id Redis cannot take as a key part
            return None
        if not record:
            if session is not None:
                await self._gone(session_id)
            return None
        fields = {k.decode(): v.decode() for k, v in record.items()}
        if session is None:
            session = Session(
                id=session_id,
                username=fields["u"],
                scopes=frozenset(json.loads(fields["sc"])),
                server=json.loads(fields["sv"]),
                protocol_version=fields["pv"],
                client_capabilities={},
                client_info={},
                shared=not fields.get("own"),
                owner=fields.get("own") or None,
            )
        session.protocol_version = fields["pv"]
        session.client_capabilities = json.loads(fields["cc"])
        session.client_info = json.loads(fields["ci"])
        session.initialized = fields.get("in") == "1"
        session.log_level = fields.get("ll") or None
        subscriptions = json.loads(fields.get("sub", "[]"))
        if subscriptions or session._subscriptions:
            session._subscriptions = set(subscriptions)
        session.last_seen = self._validated[session_id] = time.monotonic()
        self._remember(session)
        await self._refresh(session)
        return session

    def get_local(self, session_id: str) -> Session | None:
        """This process's object of the session, if it has one (no Redis round trip)."""
        return self._local.get(session_id)

    async def _refresh(self, session: Session) -> None:
        """Push the expiry back, at most a few times per idle period."""
        now = time.monotonic()
        if now - self._refreshed.get(session.id, 0.0) < self.idle_timeout / 8:
            return
        self._refreshed[session.id] = now
        expires = time.time() + self.idle_timeout
        pipe = self.redis().pipeline(transaction=False)
        pipe.expire(self._key(session.id), int(self.idle_timeout))
        pipe.zadd(f"{self.prefix}all", {session.id: expires})
        pipe.zadd(f"{self.prefix}u:{session.username}", {session.id: expires})
        exists, _, _ = await pipe.execute()
        if not exists and session.owner != self.mesh.tag:  # it expired (or ended) meanwhile
            await self._gone(session.id, session.username)

    @_store_call
    async def alive(self, session: Session) -> bool:
        """The session still exists; an open stream or connection asks now and then, which also keeps it from
        expiring. A connection of this replica (HTTP+SSE, WebSocket) holds its session whatever Redis says, but
        its record is refreshed all the same: other replicas (a POST routed there) and the counts read it."""
        if session.closed:
            return False
        self._refreshed.pop(session.id, None)
        await self._refresh(session)  # one round trip, which also finds out when it ended
        return not session.closed

    def discard(self, session_id: str) -> None:
        """End a session from synchronous code (its connection closed): forgotten here at once,
        removed from Redis soon after."""
        self._forget(session_id)
        task = asyncio.ensure_future(self.delete(session_id))
        task.add_done_callback(_log_failure)

    @_store_call
    async def delete(self, session_id: str) -> bool:
        deleted = await self._end(session_id)
        self._forget(session_id)
        await self.mesh.broadcast("session.ended", {"sid": session_id})
        return deleted

    async def _end(self, session_id: str, username: str = "") -> bool:
        """Delete the session's record and everything it owns in Redis (one script call); True when the record
        was still there."""
        if not username:
            session = self._local.get(session_id)
            username = session.username if session is not None else ""
        keys = [self._key(session_id), f"{self.prefix}all"]
        return bool(await self.run_script("end", keys, [self.prefix, session_id, username]))

    async def _gone(self, session_id: str, username: str = "") -> None:
        """A session found expired: what it owned in Redis goes now, not with their own expiry (up to the idle
        timeout + 60 s later)."""
        await self._end(session_id, username)
        self._forget(session_id)

    async def _changed(self, body: dict[str, Any]) -> None:
        if body.get("from") != self.mesh.tag:
            self._validated.pop(body["sid"], None)  # read it again on its next request

    async def _ended(self, body: dict[str, Any]) -> None:
        session = self._local.get(body["sid"])
        if session is not None and session.owner != self.mesh.tag:
            self._forget(body["sid"])
        if self.on_end is not None:
            self.on_end(body["sid"])

    def _forget(self, session_id: str) -> None:
        self._refreshed.pop(session_id, None)
        self._validated.pop(session_id, None)
        session = self._local.pop(session_id, None)
        if session is not None:
            session.close()
            self.mesh._wake_local(session_id, STANDALONE_STREAM_ID)
            if self.on_end is not None:
                self.on_end(session_id)

    @_store_call
    async def exists(self, session_id: str) -> bool:
        """Whether the session's record still exists (expired or ended: forgotten here), without keeping
        it alive."""
        if await self.redis().exists(self._key(session_id)):
            return True
        if session_id in self._local:
            await self._gone(session_id)
        else:
            self._forget(session_id)
        return False

    def _shed_idle(self) -> None:
        """Drop the copies of sessions this process has not used for an idle period, least recently used
        first: in Redis they have expired, or another replica serves them (a later request here reads them
        again). Without this the copies of sessions their clients abandoned stayed until LOCAL_CACHE of
        them had piled up (found by make soak). Copies in use (a connection of ours, a stream, a call)
        count as used now and go to the back."""
        now = time.monotonic()
        limit = now - self.idle_timeout
        for _ in range(len(self._local)):
            oldest = next(iter(self._local.values()))
            if oldest.last_seen >= limit:
                break
            if oldest.busy or oldest.owner == self.mesh.tag:
                oldest.last_seen = now
                self._local.move_to_end(oldest.id)
                continue
            del self._local[oldest.id]
            self._refreshed.pop(oldest.id, None)
            self._validated.pop(oldest.id, None)

    def _remember(self, session: Session) -> None:
        self._local[session.id] = session
        self._local.move_to_end(session.id)
        if len(self._local) > LOCAL_CACHE:
            for old in list(itertools.islice(self._local.values(), len(self._local) - LOCAL_CACHE)):
                if not old.busy and old.owner != self.mesh.tag:
                    self._local.pop(old.id, None)
                    self._refreshed.pop(old.id, None)
                    self._validated.pop(old.id, None)

    @_store_call
    async def save(self, session: Session, *names: str) -> None:
        """Write the named fields (all of them when none is named) to the session's record."""
        record = self._record(session)
        short = {"initialized": "in", "log_level": "ll", "subscriptions": "sub", "protocol_version": "pv"}
        mapping = {short[name]: record[short[name]] for name in names} if names else record
        await self.run_script("save", [self._key(session.id)], [item for pair in mapping.items() for item in pair])
        if session.shared and names != ("initialized",):  # other replicas drop their copy (nothing
            # acts on `initialized`, so that one may reach them with their next read)
            await self.mesh.broadcast("session.changed", {"sid": session.id, "from": self.mesh.tag})

    def local(self) -> list[Session]:
        """Sessions whose notifications this replica may have to write: those with a stream open here
        (a GET stream, or the connection of an HTTP+SSE / WebSocket session)."""
        return [s for s in self._local.values() if s.listeners or s.owner == self.mesh.tag]

    def known(self) -> list[Session]:
        """Every session this process has an object for (those it served lately)."""
        return list(self._local.values())

    @_store_call
    async def claim(self, session: Session, key: str) -> bool:
        if not session.shared:
            return True
        claimed = await self.run_script("claim", [f"{self.prefix}c:{session.id}"], [key, time.time(), CLAIM_SECONDS])
        return bool(claimed)

    # -- event logs ---------------------------------------------------------------------------

    def standalone(self, session: Session) -> EventLog:
        if not session.shared:
            return session.standalone
        return RedisLog(self, session.id, STANDALONE_STREAM_ID, STANDALONE_KEEP)

    def open_stream(self, session: Session, request_id: Any = None) -> EventLog:
        if not session.shared:
            return session.open_request_stream()
        runner = _dump({"tag": self.mesh.tag, "id": request_id})
        return RedisLog(self, session.id, f"r{secrets.token_hex(6)}", EVENTS_PER_STREAM, runner=runner)

    @_store_call
    async def find_stream(self, session: Session, stream_id: str) -> EventLog | None:
        if not session.shared:
            return session.find_stream(stream_id)
        if stream_id == STANDALONE_STREAM_ID:
            return self.standalone(session)
        if not stream_id.startswith("r") or not stream_id[1:].isalnum() or len(stream_id) > 16:
            return None
        log = RedisLog(self, session.id, stream_id, EVENTS_PER_STREAM)
        return log if await log.exists() else None
