"""Caching of upstream answers the gateway forwards (docs/governance.md, "Caching"). No Django here.

What is cached: ``resources/read`` answers of upstreams (direct and templated resources), the one
forwarded method whose results carry the 2026-07-28 cache hints (server/utilities/caching); lists are
served from the catalog snapshot and never reach an upstream per request, and ``prompts/get`` and
``completion/complete`` carry no hints, so they are not cached.

How long: the upstream's ``ttlMs`` when it gives one (0: not cached), bounded by ``max_ttl``; else
``default_ttl`` (GATEWAY_CACHE_TTL; 0: results without a hint are not cached). ``max_ttl`` 0 turns
the cache off.

For whom: ``cacheScope: "private"`` results (and those of a gateway with a process per user, and
modern-looking results that name no scope) are kept per user; "public" ones and those of upstreams that
give no hints at all (they see only the gateway's credentials, never the user) are shared.

Never cached: errors, ``isError`` results, results that are not ``resultType: "complete"``, requests
carrying ``inputResponses``/``requestState``, and answers during which the upstream asked the client
something (sampling, elicitation, roots: the answer depends on that client's replies).

Invalidation is O(1): each gateway has a generation token and each (gateway, URI) one, kept in the same
store (so every replica sharing it sees a change); an entry records the tokens it was read under and
is served only while both are unchanged. A missing token is created before the upstream is asked, so an
evicted token can only cost hits, never bring back a stale entry.

Single flight: concurrent identical misses in one process share one upstream request (a future per
key); a private answer is shared only with the same user. Replicas each make their own request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from transports.protocol import vocabulary as mcp

logger = logging.getLogger(__name__)
CACHED_METHODS = frozenset({mcp.RESOURCES_READ})
# Fields of a request that make its answer depend on a particular client's replies (basic/patterns/mrtr).
_ROUND_FIELDS = ("inputResponses", "requestState")
PUBLIC, PRIVATE = "public", "private"

# The upstream's answer and whether it may be shared (False: the upstream asked the client something).
Produce = Callable[[], Awaitable[tuple[dict[str, Any], bool]]]


class CacheStore(Protocol):
    """Where entries and generation tokens live (the Django adapter: transports/cache.py)."""

    async def get_many(self, keys: Sequence[str]) -> dict[str, Any]: ...

    async def set(self, key: str, value: Any, timeout: float | None) -> None: ...

    async def add(self, key: str, value: Any, timeout: float | None) -> bool: ...

    async def delete(self, key: str) -> None: ...


class MemoryStore:
    """A CacheStore in this process's memory (tests, and a core built without Django)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[str, tuple[float | None, Any]] = {}

    def _live(self, key: str) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires is not None and self._clock() >= expires:
            del self._data[key]
            return None
        return value

    async def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        found = {key: self._live(key) for key in keys}
        return {key: value for key, value in found.items() if value is not None}

    async def set(self, key: str, value: Any, timeout: float | None) -> None:
        self._data[key] = (None if timeout is None else self._clock() + timeout, value)

    async def add(self, key: str, value: Any, timeout: float | None) -> bool:
        if self._live(key) is not None:
            return False
        await self.set(key, value, timeout)
        return True

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)


def _digest(*parts: Any) -> str:
    body = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(body).hexdigest()[:40]


def _ttl_hint(result: Mapping[str, Any]) -> float | None:
    """The result's ttlMs in seconds; None when it gives none (a malformed one counts as 0)."""
    if "ttlMs" not in result:
        return None
    ttl = result["ttlMs"]
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0:
        return 0.0
    return float(ttl) / 1000


@dataclass(frozen=True, slots=True)
class _Answer:
    """What a single-flight leader hands to the followers: a cacheable answer, for everyone or one user."""

    payload: bytes
    private: bool
    user: str


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    shared: int = 0  # misses answered by another caller's upstream request (single flight)
    stored: int = 0


class UpstreamCache:
    """The cache the relay consults for the upstream requests it forwards (see the module docstring)."""

    def __init__(
        self,
        store: CacheStore,
        *,
        default_ttl: float = 0.0,
        max_ttl: float = 300.0,
        max_entry_bytes: int = 1 << 20,
        prefix: str = "gwcache",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.max_ttl = max(0.0, max_ttl)
        self.default_ttl = min(max(0.0, default_ttl), self.max_ttl)
        self.max_entry_bytes = max_entry_bytes
        self.prefix = prefix
        self.clock = clock  # wall clock: entries' expiry is compared across replicas
        self.stats = CacheStats()
        self._flights: dict[tuple[str, str, str, str], asyncio.Future[_Answer | None]] = {}

    @property
    def enabled(self) -> bool:
        return self.max_ttl > 0

    def cacheable(self, method: str, params: Mapping[str, Any]) -> bool:
        """Whether a request of ``method`` with ``params`` may be answered from the cache."""
        return self.enabled and method in CACHED_METHODS and not any(field in params for field in _ROUND_FIELDS)

    # -- keys -------------------------------------------------------------------------------------

    def generation_key(self, gateway: str) -> str:
        return f"{self.prefix}:g:{_digest(gateway)}"

    def uri_key(self, gateway: str, uri: str) -> str:
        return f"{self.prefix}:u:{_digest(gateway, uri)}"

    def entry_key(self, gateway: str, method: str, params: Mapping[str, Any], user: str | None = None) -> str:
        """The key of an answer: gateway, method, the params that affect it (not `_meta`), and the user
        for a private answer."""
        relevant = {k: v for k, v in params.items() if k != "_meta"}
        base = f"{self.prefix}:e:{_digest(gateway, method, relevant)}"
        return base if user is None else f"{base}:{_digest('user', user)}"

    # -- reading through --------------------------------------------------------------------------

    async def fetch(
        self,
        gateway: str,
        method: str,
        params: Mapping[str, Any],
        user: str,
        produce: Produce,
        *,
        always_private: bool = False,
    ) -> dict[str, Any]:
        """The answer from the cache, or from ``produce`` (once for concurrent identical misses), kept
        when cacheable."""
        uri = params.get("uri")
        generation_key = self.generation_key(gateway)
        uri_key = self.uri_key(gateway, uri) if isinstance(uri, str) else None
        public_key = self.entry_key(gateway, method, params)
        private_key = self.entry_key(gateway, method, params, user)
        keys = [generation_key, public_key, private_key] + ([uri_key] if uri_key else [])
        try:
            found = await self.store.get_many(keys)
        except Exception as exc:  # the cache is an optimisation: without it, the upstream answers
            logger.warning("the upstream cache cannot be read (%s); asking upstream %s", exc, gateway)
            return (await produce())[0]
        generation = found.get(generation_key)
        uri_generation = found.get(uri_key) if uri_key else ""
        if generation is not None and uri_generation is not None:
            for key in (private_key, public_key):
                hit = self._fresh(found.get(key), generation, uri_generation)
                if hit is not None:
                    self.stats.hits += 1
                    return hit
        self.stats.misses += 1
        try:
            if generation is None:
                generation = await self._ensure(generation_key, self.token_timeout)
            if uri_key is not None and uri_generation is None:
                uri_generation = await self._ensure(uri_key, self.token_timeout)
        except Exception as exc:
            logger.warning("the upstream cache cannot be written (%s); asking upstream %s", exc, gateway)
            return (await produce())[0]
        flight_key = (public_key, str(generation), str(uri_generation), "")
        while (running := self._flights.get(flight_key)) is not None:
            shared = await asyncio.shield(running)  # None: the leader failed, was cancelled, or may not share
            if shared is not None and (not shared.private or shared.user == user):
                self.stats.shared += 1
                value: dict[str, Any] = orjson.loads(shared.payload)
                return value
            if shared is None or flight_key[3]:
                result, _ = await produce()  # nothing to share: our own request, not stored
                return result
            # Another user's private answer: one request per user, unless one of ours was kept meanwhile.
            flight_key = (*flight_key[:3], user)
            with contextlib.suppress(Exception):
                found = await self.store.get_many([private_key])
                hit = self._fresh(found.get(private_key), generation, uri_generation)
                if hit is not None:
                    self.stats.shared += 1
                    return hit
        flight: asyncio.Future[_Answer | None] = asyncio.get_running_loop().create_future()
        self._flights[flight_key] = flight
        answer: _Answer | None = None
        try:
            result, shareable = await produce()
            answer = await self._keep(
                result, shareable, user, always_private, public_key, private_key, generation, uri_generation
            )
            return result
        finally:
            self._flights.pop(flight_key, None)
            flight.set_result(answer)

    def _fresh(self, entry: Any, generation: Any, uri_generation: Any) -> dict[str, Any] | None:
        if not isinstance(entry, list | tuple) or len(entry) != 4:
            return None
        stored_generation, stored_uri_generation, expires, payload = entry
        if stored_generation != generation or stored_uri_generation != uri_generation:
            return None
        now = self.clock()
        if now >= expires:
            return None
        result: dict[str, Any] = orjson.loads(payload)
        if "ttlMs" in result:  # what is left of the upstream's lifetime, as a cache in between should say
            result["ttlMs"] = max(0, int((expires - now) * 1000))
        return result

    async def _keep(
        self,
        result: dict[str, Any],
        shareable: bool,
        user: str,
        always_private: bool,
        public_key: str,
        private_key: str,
        generation: Any,
        uri_generation: Any,
    ) -> _Answer | None:
        """Store a cacheable answer; what the single-flight followers may reuse (None: nothing)."""
        if not shareable or result.get("isError") or result.get("resultType", "complete") != "complete":
            return None
        hint = _ttl_hint(result)
        ttl = self.default_ttl if hint is None else min(hint, self.max_ttl)
        if ttl <= 0:
            return None
        scope = result.get("cacheScope")
        # A result that names no scope but carries ttlMs speaks 2026-07-28 and forgot it: not shared.
        private = always_private or scope == PRIVATE or (scope != PUBLIC and hint is not None)
        try:
            payload = orjson.dumps(result)
        except TypeError:
            return None
        if len(payload) > self.max_entry_bytes:
            return None
        entry = [generation, uri_generation, self.clock() + ttl, payload]
        try:
            await self.store.set(private_key if private else public_key, entry, ttl)
        except Exception as exc:
            logger.warning("the upstream cache cannot be written (%s)", exc)
        else:
            self.stats.stored += 1
        return _Answer(payload, private, user)

    async def _ensure(self, key: str, timeout: float | None) -> str:
        """The generation token under ``key``, made now when there is none."""
        token = secrets.token_hex(8)
        if await self.store.add(key, token, timeout):
            return token
        current = (await self.store.get_many([key])).get(key)
        if current is None:  # gone again in between: ours then
            await self.store.set(key, token, timeout)
            return token
        return str(current)

    # -- invalidation -----------------------------------------------------------------------------

    @property
    def token_timeout(self) -> float:
        """How long a generation token is kept: longer than any entry read under it lives. A token that
        expired is made anew, which only costs the entries under the old one (no key lives forever)."""
        return self.max_ttl * 2 + 60

    async def invalidate_gateway(self, gateway: str) -> None:
        """Everything cached of ``gateway`` is stale (its lists changed, or its catalog entry did)."""
        try:
            await self.store.set(self.generation_key(gateway), secrets.token_hex(8), self.token_timeout)
        except Exception:
            logger.error("the cache of upstream %s could not be invalidated", gateway, exc_info=True)

    async def invalidate_uri(self, gateway: str, uri: str) -> None:
        """What is cached of the upstream resource ``uri`` of ``gateway`` is stale (resources/updated)."""
        try:
            await self.store.set(self.uri_key(gateway, uri), secrets.token_hex(8), self.token_timeout)
        except Exception:
            logger.error("the cache of %s of upstream %s could not be invalidated", uri, gateway, exc_info=True)

    async def invalidate_gateways(self, gateways: Iterable[str]) -> None:
        for gateway in gateways:
            await self.invalidate_gateway(gateway)
