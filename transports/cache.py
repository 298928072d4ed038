"""The upstream-answer cache on Django's cache framework (docs/governance.md, "Caching").

``caches[GATEWAY_CACHE_ALIAS]``: the local-memory backend is per process (each replica caches alone,
and hears only the invalidations its own upstream connections see); Redis is shared by every replica
(one invalidation reaches them all); the database backend works but costs a query per cached read,
which the hot path does not allow (docs/governance.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache

from transports.protocol.cache import UpstreamCache

# Backends that keep everything in this process: called directly, no thread hop (nothing blocks).
_IN_PROCESS = (LocMemCache, DummyCache)


class DjangoCacheStore:
    """A ``CacheStore`` on one Django cache backend: its async API, or its plain methods for the
    in-process backends (their async methods would only add a hop to a worker thread)."""

    def __init__(self, backend: BaseCache) -> None:
        self.backend = backend
        self.in_process = isinstance(backend, _IN_PROCESS)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        if self.in_process:
            return dict(self.backend.get_many(keys))
        return dict(await self.backend.aget_many(keys))

    async def set(self, key: str, value: Any, timeout: float | None) -> None:
        if self.in_process:
            self.backend.set(key, value, timeout)
        else:
            await self.backend.aset(key, value, timeout)

    async def add(self, key: str, value: Any, timeout: float | None) -> bool:
        if self.in_process:
            return bool(self.backend.add(key, value, timeout))
        return bool(await self.backend.aadd(key, value, timeout))

    async def delete(self, key: str) -> None:
        if self.in_process:
            self.backend.delete(key)
        else:
            await self.backend.adelete(key)


def upstream_cache() -> UpstreamCache | None:
    """The cache of upstream answers from settings; None when caching is off (GATEWAY_CACHE_MAX_TTL 0)."""
    if settings.GATEWAY_CACHE_MAX_TTL <= 0:
        return None
    return UpstreamCache(
        DjangoCacheStore(caches[settings.GATEWAY_CACHE_ALIAS]),
        default_ttl=settings.GATEWAY_CACHE_TTL,
        max_ttl=settings.GATEWAY_CACHE_MAX_TTL,
        max_entry_bytes=settings.GATEWAY_CACHE_MAX_ENTRY_BYTES,
    )
