"""Rate and concurrency limits (docs/governance.md, "Rate and concurrency limits"). No Django here.

Rates are token buckets: a bucket of capacity N refills N tokens per window (so "100/minute" allows a
burst of 100, then one call every 0.6 s); each request takes one token from every bucket it counts
against, all or none. Buckets live in a ``MemoryStore`` (this process) or a ``RedisStore`` (shared by
every replica: one Lua script per check, however many buckets the request hits).

Rates arrive already parsed, as ``(N, window seconds)`` pairs: the Django side parses the settings
(``transports.limits``) and the catalog entries' ``rate_limit`` (``registry.selectors.catalog_rows``).
``active()`` is the process's ``Limiter``; with no rate configured anywhere a request makes no store
call at all. Concurrency per upstream is an ``asyncio.Semaphore`` per gateway per process
(``UpstreamSlots``). Every refusal is counted in ``refusals`` (by limit name) for the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from transports.protocol import redis_client
from transports.protocol.jsonrpc import JsonRpcError

# The JSON-RPC error code of every refusal by a limit: in the implementation-defined server range
# (-32000..-32099) and echoing HTTP 429, apart from the codes MCP itself uses (-32002, -32020..-32022, -32042).
RATE_LIMITED = -32029

Rate = tuple[int, float]  # (requests, window in seconds)

USER, TOKEN, SERVER, TOOL, GATEWAY = (
    "GATEWAY_RATE_LIMIT_PER_USER",
    "GATEWAY_RATE_LIMIT_PER_TOKEN",
    "GATEWAY_RATE_LIMIT_PER_SERVER",
    "GATEWAY_RATE_LIMIT_PER_TOOL",
    "GATEWAY_RATE_LIMIT_PER_GATEWAY",
)
# The names of a catalog entry's own limits (they win over the setting of their kind).
SERVER_ENTRY, TOOL_ENTRY, GATEWAY_ENTRY = "VirtualServer.rate_limit", "Tool.rate_limit", "Gateway.rate_limit"
CONCURRENCY, CONCURRENCY_ENTRY = "GATEWAY_UPSTREAM_MAX_CONCURRENCY", "Gateway.max_concurrency"

# Refusals since the process started, by limit name (read by the metrics collector).
refusals: dict[str, int] = {}

_UNITS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


def describe_rate(rate: Rate) -> str:
    """(100, 60) -> '100/minute'."""
    count, window = rate
    unit = _UNITS.get(int(window)) if float(window).is_integer() else None
    return f"{count}/{unit}" if unit else f"{count}/{window:g}s"


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket a request counts against: its store key, the limit's name, its rate, and whom it
    limits (for the message)."""

    key: str
    limit: str
    rate: Rate
    who: str


class RateLimited(Exception):
    """A limit refused the request; ``retry_after``: whole seconds until it would pass."""

    def __init__(self, limit_name: str, retry_after: float, message: str = "") -> None:
        self.limit_name = limit_name
        self.retry_after = max(1, math.ceil(retry_after))
        self.message = message or f"Rate limit {limit_name} reached: retry in {self.retry_after} s."
        super().__init__(self.message)

    @classmethod
    def for_bucket(cls, bucket: Bucket, wait: float) -> RateLimited:
        seconds = max(1, math.ceil(wait))
        message = (
            f"Rate limit {bucket.limit} ({describe_rate(bucket.rate)}) reached for {bucket.who}: retry in {seconds} s."
        )
        return cls(bucket.limit, seconds, message)

    def error(self) -> JsonRpcError:
        """The JSON-RPC error clients get (HTTP transports answer it with 429 and Retry-After)."""
        return JsonRpcError(
            RATE_LIMITED, self.message, {"retryAfter": self.retry_after, "limit": self.limit_name}, http_status=429
        )


def count_refusal(limit_name: str) -> None:
    refusals[limit_name] = refusals.get(limit_name, 0) + 1


class Store(Protocol):
    async def take(self, buckets: Sequence[Bucket]) -> tuple[Bucket, float] | None:
        """Take a token from every bucket, or from none: None when all had one, else the bucket that
        refused (the one with the longest wait) and the seconds until it has a token."""


def _refill(tokens: float, stamp: float, now: float, rate: Rate) -> float:
    capacity, window = rate
    return min(float(capacity), tokens + max(0.0, now - stamp) * capacity / window)


class MemoryStore:
    """Buckets in this process: at most ``max_buckets``; a bucket idle long enough to be full again
    is the same as no bucket, so idle ones are dropped (oldest first) as new ones come."""

    def __init__(self, *, max_buckets: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_buckets = max_buckets
        self.clock = clock
        # key -> [tokens, stamp, the time it is full again]; in order of last use.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def take(self, buckets: Sequence[Bucket]) -> tuple[Bucket, float] | None:
        return self.take_now(buckets)

    def take_now(self, buckets: Sequence[Bucket]) -> tuple[Bucket, float] | None:
        now = self.clock()
        levels: list[float] = []
        worst: tuple[Bucket, float] | None = None
        for bucket in buckets:
            state = self._buckets.get(bucket.key)
            tokens = float(bucket.rate[0]) if state is None else _refill(state[0], state[1], now, bucket.rate)
            levels.append(tokens)
            if tokens < 1.0:
                wait = (1.0 - tokens) * bucket.rate[1] / bucket.rate[0]
                if worst is None or wait > worst[1]:
                    worst = (bucket, wait)
        if worst is not None:
            return worst
        for bucket, tokens in zip(buckets, levels, strict=True):
            left = tokens - 1.0
            full_at = now + (bucket.rate[0] - left) * bucket.rate[1] / bucket.rate[0]
            self._buckets[bucket.key] = [left, now, full_at]
            self._buckets.move_to_end(bucket.key)
        self._sweep(now)
        return None

    def _sweep(self, now: float) -> None:
        entries = self._buckets
        while entries:
            key, state = next(iter(entries.items()))
            if state[2] > now and len(entries) <= self.max_buckets:
                return
            del entries[key]  # full again (idle), or over the bound: the least recently used goes


# KEYS: the buckets; ARGV: capacity, window (seconds) and tokens wanted of each. Redis's own clock, so every
# replica agrees. All or none: when a bucket has not one token, nothing is taken and the reply names the
# bucket and the wait; else each bucket gives what was wanted, or all it has (at least one), and the reply
# lists what each gave. Each key expires when its bucket is full again.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local levels = {}
local worst, worst_wait = 0, 0
for i = 1, #KEYS do
  local cap, window = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])
  local state = redis.call('HMGET', KEYS[i], 't', 's')
  local tokens = cap
  if state[1] then
    tokens = math.min(cap, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * cap / window)
  end
  levels[i] = tokens
  if tokens < 1 then
    local wait = (1 - tokens) * window / cap
    if wait > worst_wait then worst, worst_wait = i, wait end
  end
end
if worst > 0 then return {worst, tostring(worst_wait)} end
local reply = {0, '0'}
for i = 1, #KEYS do
  local grant = math.max(1, math.min(tonumber(ARGV[3 * i]), math.floor(levels[i])))
  redis.call('HSET', KEYS[i], 't', tostring(levels[i] - grant), 's', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(tonumber(ARGV[3 * i - 1]) * 1000))
  reply[#reply + 1] = grant
end
return reply
"""

# Leases: a replica takes a small share of a bucket at once (LEASE_SHARE of its capacity, at least one
# token) and spends it locally for a short while (LEASE_SECONDS of the window, between the bounds), so a
# busy user costs one Redis round trip per lease, not per request. A limit small enough that its share is
# one token (under 200 per window) is checked in Redis on every request, exactly. Tokens of a lease that
# expires unspent are lost: across replicas a limit is never exceeded, and may admit up to LEASE_SHARE of
# its capacity fewer requests per replica and lease period than it allows.
LEASE_SHARE = 0.01
LEASE_SECONDS = 0.05
LEASE_SECONDS_BOUNDS = (0.05, 1.0)
MAX_LEASES = 100_000


def lease_size(rate: Rate) -> int:
    return max(1, min(rate[0], int(rate[0] * LEASE_SHARE)))


def lease_seconds(rate: Rate) -> float:
    low, high = LEASE_SECONDS_BOUNDS
    return min(high, max(low, rate[1] * LEASE_SECONDS))


class RedisStore:
    """Buckets in Redis under ``prefix`` (shared by every replica): one script call per check, or none
    while this process holds a lease on every bucket of the request (see ``LEASE_SHARE``). One lease of a
    bucket is asked for at a time: requests that find it spent while it is being renewed wait for that
    renewal instead of each taking a lease of their own (which would drain the shared bucket)."""

    def __init__(self, url: str, *, prefix: str = "mcpgw:rl:", clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.prefix = prefix
        self.clock = clock
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._script: Any = None
        self._leases: dict[str, list[float]] = {}  # bucket key -> [tokens left, expires at]
        self._renewing: dict[str, asyncio.Future[None]] = {}  # bucket key -> its renewal in flight

    def _take_script(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:  # a client belongs to its event loop
            self._client = redis_client.async_client(self.url)
            self._loop = loop
            self._script = self._client.register_script(_TAKE)
            self._renewing = {}
        return self._script

    async def take(self, buckets: Sequence[Bucket]) -> tuple[Bucket, float] | None:
        leases = self._leases
        while True:
            now = self.clock()
            needed = [b for b in buckets if (lease := leases.get(b.key)) is None or lease[0] < 1 or lease[1] <= now]
            if not needed:
                break
            # A limit whose lease is one token is asked of Redis by every request: nothing to wait for.
            renewals = [self._renewing.get(b.key) for b in needed if lease_size(b.rate) > 1]
            if any(renewals) and self._loop is asyncio.get_running_loop():
                await asyncio.wait([f for f in renewals if f is not None])
                continue  # look again: the renewal may have left enough, or been refused
            refused = await self._renew(needed, now)
            if refused is not None:
                return refused
            break
        # No await since the leases were looked at (or renewed): nobody else spends them in between.
        for bucket in buckets:
            lease = leases.get(bucket.key)
            if lease is not None:
                lease[0] -= 1
        return None

    async def _renew(self, needed: list[Bucket], now: float) -> tuple[Bucket, float] | None:
        script = self._take_script()
        leased = [b for b in needed if lease_size(b.rate) > 1]
        flight: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for bucket in leased:
            self._renewing[bucket.key] = flight
        try:
            args: list[Any] = []
            for bucket in needed:
                args += [bucket.rate[0], bucket.rate[1], lease_size(bucket.rate)]
            reply = await script(keys=[self.prefix + b.key for b in needed], args=args)
            if int(reply[0]) != 0:
                return needed[int(reply[0]) - 1], float(reply[1])
            if len(self._leases) > MAX_LEASES:
                self._sweep(now)
            for bucket, granted in zip(needed, reply[2:], strict=True):
                # One token of the grant is this request's; the rest is the lease.
                self._leases[bucket.key] = [float(granted), now + lease_seconds(bucket.rate)]
            return None
        finally:
            for bucket in leased:
                if self._renewing.get(bucket.key) is flight:
                    del self._renewing[bucket.key]
            flight.set_result(None)

    def _sweep(self, now: float) -> None:
        for key in [key for key, lease in self._leases.items() if lease[1] <= now or lease[0] < 1]:
            del self._leases[key]


class UpstreamBusy(JsonRpcError):
    """A call waited GATEWAY_UPSTREAM_QUEUE_TIMEOUT for a slot of its upstream and got none."""


class UpstreamSlots:
    """Calls in flight to each upstream from this process: a semaphore per gateway, made again when
    its bound changes (calls holding the old one finish on it)."""

    def __init__(self) -> None:
        self._slots: dict[str, tuple[int, asyncio.Semaphore, asyncio.AbstractEventLoop]] = {}

    @contextlib.asynccontextmanager
    async def slot(self, gateway: str, bound: int, limit_name: str, timeout: float) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        held = self._slots.get(gateway)
        if held is None or held[0] != bound or held[2] is not loop:
            held = (bound, asyncio.Semaphore(bound), loop)
            self._slots[gateway] = held
        semaphore = held[1]
        if semaphore.locked():
            try:
                await asyncio.wait_for(semaphore.acquire(), timeout)
            except TimeoutError:
                count_refusal(limit_name)
                raise UpstreamBusy(
                    RATE_LIMITED,
                    f"Upstream {gateway!r} is busy: {bound} calls at once is its bound ({limit_name}={bound}), and no "
                    f"slot freed up within {timeout:g} s (GATEWAY_UPSTREAM_QUEUE_TIMEOUT): retry shortly.",
                    {"retryAfter": 1, "limit": limit_name},
                    http_status=429,
                ) from None
        else:
            await semaphore.acquire()
        try:
            yield
        finally:
            semaphore.release()


@dataclass
class Limiter:
    """The limits of this process: rates from settings (None: none), the store, the upstream bound."""

    per_user: Rate | None = None
    per_token: Rate | None = None
    per_server: Rate | None = None
    per_tool: Rate | None = None
    per_gateway: Rate | None = None
    max_concurrency: int = 0
    queue_timeout: float = 2.0
    store: Store | None = None

    def __post_init__(self) -> None:
        if self.store is None:
            self.store = MemoryStore()
        self.upstreams = UpstreamSlots()

    async def take(self, buckets: Sequence[Bucket]) -> None:
        """Raise RateLimited (counted) unless every bucket has a token; then each gives one."""
        assert self.store is not None
        refused = await self.store.take(buckets)
        if refused is not None:
            count_refusal(refused[0].limit)
            raise RateLimited.for_bucket(*refused)

    def request_buckets(
        self, username: str, token_id: str | None, server: str | None, server_rate: Rate | None
    ) -> list[Bucket]:
        """What one MCP request counts against (per user, per token, per virtual server and user)."""
        buckets = []
        if self.per_user is not None:
            buckets.append(Bucket(f"u:{username}", USER, self.per_user, username))
        if self.per_token is not None and token_id is not None:
            buckets.append(Bucket(f"t:{token_id}", TOKEN, self.per_token, f"token {token_id} of {username}"))
        if server is not None and (server_rate is not None or self.per_server is not None):
            name, rate = (SERVER_ENTRY, server_rate) if server_rate is not None else (SERVER, self.per_server)
            assert rate is not None
            buckets.append(Bucket(f"s:{server}:{username}", name, rate, f"{username} on virtual server {server!r}"))
        return buckets

    def call_buckets(
        self,
        username: str,
        tool: str,
        tool_rate: Rate | None,
        gateway: str | None,
        upstreams: Mapping[str, Mapping[str, Any]],
    ) -> list[Bucket]:
        """What one tools/call counts against (per tool and user, per gateway for everyone)."""
        buckets = []
        if tool_rate is not None or self.per_tool is not None:
            name, rate = (TOOL_ENTRY, tool_rate) if tool_rate is not None else (TOOL, self.per_tool)
            assert rate is not None
            buckets.append(Bucket(f"tool:{tool}:{username}", name, rate, f"{username} on tool {tool!r}"))
        if gateway is not None:
            row = upstreams.get(gateway)
            own = row.get("rate_limit") if row is not None else None
            if own is not None or self.per_gateway is not None:
                name, rate = (GATEWAY_ENTRY, own) if own is not None else (GATEWAY, self.per_gateway)
                assert rate is not None
                buckets.append(Bucket(f"g:{gateway}", name, rate, f"gateway {gateway!r} (everyone's calls)"))
        return buckets

    def upstream_bound(self, row: Mapping[str, Any] | None) -> tuple[int, str]:
        """The most calls in flight to an upstream at once (0: no bound), and the limit's name."""
        own = row.get("max_concurrency") if row is not None else None
        if own is not None:
            return int(own), CONCURRENCY_ENTRY
        return self.max_concurrency, CONCURRENCY


_current: Limiter | None = None
_provider: Callable[[], Limiter] = Limiter


def active() -> Limiter:
    """The process's limits (made by the provider the Django side installs, on first use)."""
    global _current
    if _current is None:
        _current = _provider()
    return _current


def install(provider: Callable[[], Limiter]) -> None:
    """Make the process's limits with ``provider`` from now on (the next ``active()`` call)."""
    global _provider, _current
    _provider, _current = provider, None


def reset() -> None:
    """Forget the current limits (settings changed); buckets in memory start full again."""
    global _current
    _current = None
