"""The cache of 2026-07-28 results that carry `ttlMs` (cache hints): small and bounded, one per
client (a `ModernSession` in stateless.py keeps it and drops what a notification makes stale).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from transports.protocol.vocabulary import CACHEABLE_METHODS


class ResultCache:
    """Results with a positive `ttlMs`, kept (serialized, so nobody mutates them) until they expire.

    Bounded by entry count (least recently used out first) and by the size of one entry. Keyed by
    method and params without `_meta`. `cacheScope: "private"` results are cached too: every request
    of this client carries the gateway's own credentials, so "private" is the gateway's view.
    """

    def __init__(self, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(method: str, params: Mapping[str, Any] | None) -> tuple[str, str] | None:
        if method not in CACHEABLE_METHODS:
            return None
        relevant = {k: v for k, v in (params or {}).items() if k != "_meta"}
        try:
            return method, orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS).decode()
        except TypeError:
            return None

    def get(self, key: tuple[str, str]) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, data = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        value: dict[str, Any] = orjson.loads(data)
        return value

    def put(self, key: tuple[str, str], result: Mapping[str, Any]) -> None:
        ttl = result.get("ttlMs")
        if self.max_entries <= 0 or isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
            return
        if result.get("resultType", "complete") != "complete":
            return
        try:
            data = orjson.dumps(result)
        except TypeError:
            return
        if len(data) > self.max_bytes:
            return
        self._entries[key] = (self._clock() + ttl / 1000, data)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop(self, method: str, uri: str | None = None) -> None:
        """Forget the results of `method` (for resources/read: only those of `uri`, when given)."""
        for key in [k for k in self._entries if k[0] == method]:
            if uri is None or orjson.loads(key[1]).get("uri") == uri:
                del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()
