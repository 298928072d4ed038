"""The pool of upstream MCP clients: one connected client per enabled gateway, shared by every
client session, rebuilt when the gateway's settings change, reconnected when it drops.

Protocol eras: a gateway whose era setting is ``auto`` may sit in front of an upstream that speaks
both eras (it answers ``server/discover`` *and* accepts ``initialize``). Such an upstream is reached
in the era of the client's request: a session-era client through an upstream session (the upstream's
server->client requests relay to the client's stream), a 2026-07-28 client statelessly. The gateway
bridges between eras only for an upstream that speaks one era, or when the gateway's era setting
forces one (``legacy`` or ``modern``: always that era).

stdio gateways' processes are supervised (``StdioSupervisor``: restarts with backoff, idle stop, a process
limit); a gateway with ``per_user_process`` has one process per user (the user is part of the key).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson

from transports.protocol.stdio_supervisor import StdioSupervisor
from transports.protocol.upstream.base import UpstreamClient, UpstreamConfig, UpstreamUnavailable
from transports.protocol.upstream_auth import UpstreamAuth, dynamic, static_headers

logger = logging.getLogger(__name__)

NotificationSink = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | None]]

# How long the pool trusts "this upstream refused initialize" before trying a session with it again
# (the upstream may be replaced, or the refusal may have been an outage).
SINGLE_ERA_RETRY = 300.0


FULL_CAPABILITIES: dict[str, Any] = {
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
    "roots": {"listChanged": True},
}


def capability_profile(declared: dict[str, Any]) -> dict[str, Any]:
    """What the gateway declares upstream on behalf of a client that declared ``declared``: the
    client features it can really answer (sampling, elicitation modes, roots), nothing more."""
    profile: dict[str, Any] = {}
    sampling = declared.get("sampling")
    if sampling is not None:
        profile["sampling"] = {"tools": {}} if isinstance(sampling, dict) and "tools" in sampling else {}
    elicitation = declared.get("elicitation")
    if elicitation is not None:
        modes: dict[str, Any] = {
            mode: {} for mode in ("form", "url") if isinstance(elicitation, dict) and mode in elicitation
        }
        profile["elicitation"] = modes or {"form": {}}  # an empty object means form mode
    if declared.get("roots") is not None:
        profile["roots"] = {"listChanged": True}
    return profile


def config_from_row(
    row: dict[str, Any], *, request_timeout: float, headers: dict[str, str] | None = None
) -> UpstreamConfig:
    """An UpstreamConfig from a gateway row of the catalog snapshot (credentials become headers; ``headers``:
    credential headers worked out elsewhere, ``UpstreamAuth``: OAuth tokens, a user's own)."""
    if headers is None:
        headers = static_headers(row["auth_type"], row.get("credentials") or {})
    return UpstreamConfig(
        name=row["name"],
        transport=row["transport"],
        era=row.get("era") or "auto",
        url=row["url"],
        headers=headers,
        command=row["command"],
        args=tuple(row["args"]),
        env=dict(row["env"]),
        cwd=row["cwd"],
        verify_tls=row["verify_tls"],
        ca_bundle=row["ca_bundle"],
        request_timeout=request_timeout,
        client_capabilities=FULL_CAPABILITIES,
    )


@dataclasses.dataclass(slots=True)
class _Built:
    """The configs of one gateway row for one user (None: any user), built on its first call."""

    headers: dict[str, str] | None  # the credential headers worked out per call it carries (None: the row's own)
    config: UpstreamConfig
    # By (capability profile key, forced era): the config of an upstream session that declares that profile.
    variants: dict[tuple[str | None, str | None], UpstreamConfig] = dataclasses.field(default_factory=dict)

    def variant(self, profile: str | None, capabilities: Any, era: str | None = None) -> UpstreamConfig:
        """The config declaring ``capabilities`` (``profile``: their ``_profile_key``), in ``era`` if given."""
        if profile is None and era is None:
            return self.config
        config = self.variants.get((profile, era))
        if config is None:
            config = self.config
            if profile is not None:  # a copy of its own: later calls reuse it, the caller's dict may change
                config = dataclasses.replace(config, client_capabilities=copy.deepcopy(capabilities))
            if era is not None:
                config = dataclasses.replace(config, era=era)
            self.variants[(profile, era)] = config
        return config


def _profile_key(capabilities: dict[str, Any] | None) -> str | None:
    """The capability profile as a key (None: the session that declares everything)."""
    if capabilities is None or capabilities == FULL_CAPABILITIES:
        return None
    return orjson.dumps(capabilities, option=orjson.OPT_SORT_KEYS).decode()


def _same(kept: UpstreamConfig, config: UpstreamConfig) -> bool:
    # The configs are built once per snapshot row: mostly the very same object, whose field-by-field
    # comparison would cost more than the lookup it guards.
    return kept is config or kept == config


class UpstreamPool:
    """Connected upstream clients by gateway name."""

    def __init__(
        self, *, request_timeout: float = 60.0, stdio: StdioSupervisor | None = None, auth: UpstreamAuth | None = None
    ) -> None:
        self.request_timeout = request_timeout
        # OAuth tokens and users' own credentials (docs/governance.md, "Per-user upstream credentials").
        self.auth = auth if auth is not None else UpstreamAuth()
        self.stdio = stdio if stdio is not None else StdioSupervisor()
        self._booting: set[asyncio.Task[None]] = set()
        self._clients: dict[str, tuple[UpstreamConfig, UpstreamClient]] = {}
        self._overrides: dict[str, UpstreamClient] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Upstreams that answered server/discover but refused a session: (their config, retry after).
        self._single_era: dict[str, tuple[UpstreamConfig, float]] = {}
        self._split: set[str] = set()  # gateways with clients forced to the session era (keys "...\x00era=legacy")
        # The configs built from each gateway's row, kept for as long as calls bring that same row: a catalog
        # snapshot is immutable and each version's is built from rows read afresh, so another row object is a
        # new catalog version (or a caller's own row) and is built anew on its first call. By gateway:
        # (the row, the request timeout, per user: users' own credentials are each user's alone).
        self._configs: dict[str, tuple[dict[str, Any], float, dict[str | None, _Built]]] = {}
        self.on_notification: NotificationSink | None = None

    def override(self, name: str, client: UpstreamClient) -> None:
        """Use this client for the gateway ``name`` (tests: in-memory upstreams)."""
        self._overrides[name] = client

    def has_override(self, name: str) -> bool:
        return name in self._overrides

    async def get(
        self,
        name: str,
        row: dict[str, Any],
        capabilities: dict[str, Any] | None = None,
        *,
        era: str | None = None,
        user: str | None = None,
    ) -> UpstreamClient:
        """A connected client for the gateway, connecting (or reconnecting) when needed.

        ``capabilities`` (a ``capability_profile``) picks the upstream session that declares exactly
        those client features, so an upstream that adapts to its client sees what the real client can
        do; None is the session that declares them all (catalog reads, subscriptions).

        ``era`` is the era of the client's request ("legacy": a session-era client, "modern": a
        2026-07-28 one; None: either will do). With the gateway's era setting ``auto`` and an upstream
        that speaks both eras, the client returned speaks the requested era; with an upstream that
        speaks one era, or an era setting of ``legacy`` or ``modern``, it speaks that one era and the
        core bridges.

        ``user``: the caller; a gateway with ``per_user_process`` gets a process per user, one with
        ``per_user_credentials`` a connection per user with that user's credentials (``CredentialsNeeded``
        when the user has none)."""
        if name in self._overrides:
            return self._overrides[name]
        headers = await self.auth.headers(row, user) if dynamic(row) else None
        if not row.get("per_user_process") and not row.get("per_user_credentials"):
            user = None
        built = self._built(name, row, user, headers)
        config = built.config
        profile = _profile_key(capabilities)
        profiled = built.variant(profile, capabilities)
        if config.era != "auto" and name in self._split:
            await self._drop_split(name)  # the era setting is no longer auto: no per-era sessions
        if config.era != "auto" or era is None:
            return await self._connected(name, self._key(name, profile, user=user), profiled)
        # The shared client (all capabilities, era detected) tells which eras the upstream speaks.
        shared = await self._connected(name, self._key(name, None, user=user), config)
        if shared.era != "modern" or era == "modern":
            # No discover answer: a session-era upstream (every client bridges onto a session). Or a
            # 2026-07-28 client of a modern upstream: detection already picks that era.
            if profiled is config:
                return shared
            return await self._connected(name, self._key(name, profile, user=user), profiled)
        # A session-era client and an upstream that answered server/discover: a session too, if it
        # accepts initialize (a dual-era upstream).
        refused = self._single_era.get(name)
        if refused is not None and _same(refused[0], config) and time.monotonic() < refused[1]:
            return await self._connected(name, self._key(name, profile, user=user), profiled)
        self._split.add(name)
        try:
            client = await self._connected(
                name,
                self._key(name, profile, "legacy", user=user),
                built.variant(profile, capabilities, "legacy"),
            )
        except UpstreamUnavailable as exc:
            logger.info(
                "upstream %s answers server/discover but refused a session (%s): session-era clients are "
                "bridged onto 2026-07-28",
                name,
                exc,
            )
            self._single_era[name] = (config, time.monotonic() + SINGLE_ERA_RETRY)
            return await self._connected(name, self._key(name, profile, user=user), profiled)
        self._single_era.pop(name, None)
        return client

    def speaks_both_eras(self, name: str) -> bool | None:
        """What the pool learned about the upstream ``name``: True when it served both a 2026-07-28
        client and a session, False when it speaks one era, None when not known yet."""
        if name in self._single_era:
            return False
        eras = {client.era for key, (_, client) in self._clients.items() if key.split("\x00")[0] == name}
        if "legacy" in eras and "modern" in eras:
            return True
        return False if eras == {"legacy"} else None

    def _built(self, name: str, row: dict[str, Any], user: str | None, headers: dict[str, str] | None) -> _Built:
        """The configs of the gateway's row for ``user``, built when the row, the timeout or the credential
        headers worked out for this call differ from those of the last build."""
        entry = self._configs.get(name)
        if entry is None or entry[0] is not row or entry[1] != self.request_timeout:
            entry = self._configs[name] = (row, self.request_timeout, {})
        built = entry[2].get(user)
        if built is None or built.headers != headers:
            config = config_from_row(row, request_timeout=self.request_timeout, headers=headers)
            built = entry[2][user] = _Built(headers, config)
        return built

    @staticmethod
    def _key(name: str, profile: str | None, era: str | None = None, *, user: str | None = None) -> str:
        """The client's key; ``profile``: a ``_profile_key``."""
        key = name
        if profile is not None:
            key = f"{name}\x00{profile}"
        if user is not None:
            key = f"{key}\x00user={user}"
        if era is not None:
            key = f"{key}\x00era={era}"
        return key

    async def _drop_split(self, name: str) -> None:
        self._split.discard(name)
        self._single_era.pop(name, None)
        for key in [k for k in self._clients if k.startswith(f"{name}\x00") and k.endswith("\x00era=legacy")]:
            config, client = self._clients.pop(key)
            await (self.stdio.stop(key) if config.transport == "stdio" else self._close(client))

    async def _connected(self, name: str, key: str, config: UpstreamConfig) -> UpstreamClient:
        """The client kept under ``key``: connected, and rebuilt when ``config`` changed."""
        if config.transport == "stdio":  # the supervisor starts, restarts and stops its process
            previous = self._clients.get(key)
            if previous is not None and previous[0].transport != "stdio":
                del self._clients[key]
                await self._close(previous[1])
            stdio = await self.stdio.client(key=key, config=config, sink=self._sink(name))
            self._clients[key] = (config, stdio)
            return stdio
        current = self._clients.get(key)
        if current is not None and _same(current[0], config) and current[1].connected:
            return current[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            current = self._clients.get(key)
            if current is not None and _same(current[0], config) and current[1].connected:
                return current[1]
            if current is not None:
                del self._clients[key]
                await (self.stdio.stop(key) if current[0].transport == "stdio" else self._close(current[1]))
            from transports.protocol.upstream import create_client

            client = create_client(config)
            client.set_notification_handler(self._sink(name))
            try:
                await client.connect()
            except UpstreamUnavailable:
                await self._close(client)
                raise
            self._clients[key] = (config, client)
            return client

    def _sink(self, name: str) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]:
        async def handle(message: dict[str, Any]) -> dict[str, Any] | None:
            if self.on_notification is not None:
                return await self.on_notification(name, message)
            return None

        return handle

    async def _close(self, client: UpstreamClient) -> None:
        try:
            await client.aclose()
        except Exception:
            logger.debug("error closing upstream client", exc_info=True)

    def start_at_boot(self, rows: Iterable[dict[str, Any]]) -> None:
        """Start, in the background, the shared process of each stdio gateway row marked ``start_at_boot``
        (called whenever the catalog is loaded: a running one is left as it is). Per-user processes wait
        for their user."""
        for row in rows:
            if row.get("transport") == "stdio" and row.get("start_at_boot") and not row.get("per_user_process"):
                task = asyncio.get_running_loop().create_task(self._boot(row))
                self._booting.add(task)
                task.add_done_callback(self._booting.discard)

    async def _boot(self, row: dict[str, Any]) -> None:
        name = row["name"]
        try:
            await self.get(name, row)
        except (UpstreamUnavailable, ValueError) as exc:
            logger.warning("upstream %s did not start at boot: %s", name, exc)
            return
        self.stdio.pin(self._key(name, None))

    async def aclose(self) -> None:
        for task in list(self._booting):
            task.cancel()
        for config, client in list(self._clients.values()):
            if config.transport != "stdio":
                await self._close(client)
        self._clients.clear()
        await self.stdio.aclose()
        await self.auth.aclose()
