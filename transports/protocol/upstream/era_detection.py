"""Era detection when an upstream client connects (versioning, "Backward Compatibility with
Initialization-Based Versions"): the `server/discover` probe, then the `initialize` handshake when the
upstream is not modern. A mixin of `RpcClient` (engine.py); what the probe's answers mean is decided in
probe.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from transports.protocol.upstream import probe, stateless
from transports.protocol.upstream.base import (
    MessageHandler,
    UpstreamConfig,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from transports.protocol.vocabulary import (
    INITIALIZE,
    INITIALIZED,
    LEGACY,
    LEGACY_VERSIONS,
    MODERN,
    MODERN_VERSIONS,
    SERVER_DISCOVER,
    UNSUPPORTED_PROTOCOL_VERSION,
)

logger = logging.getLogger("transports.protocol.upstream")


class EraDetection:
    """Finds out which era the upstream speaks and sets the connection up for it; part of `RpcClient`."""

    if TYPE_CHECKING:  # provided by RpcClient and the transport
        config: UpstreamConfig
        era: str | None
        initialize_result: dict[str, Any] | None
        discover_result: dict[str, Any] | None
        protocol_version: str | None
        SPEAKS_MODERN: bool
        HTTP: bool
        _open: bool
        _initialized: bool
        _generation: int

        async def _call(
            self,
            method: str,
            params: dict[str, Any] | None,
            *,
            timeout: float | None,
            on_message: MessageHandler | None,
            internal: bool,
            modern: str | None = None,
            headers: Mapping[str, str] | None = None,
            background: bool = False,
        ) -> dict[str, Any]: ...
        async def _send(self, message: dict[str, Any]) -> None: ...
        async def _open_transport(self) -> None: ...
        async def _close_transport(self, *, final: bool) -> None: ...
        async def _after_initialize(self) -> None: ...
        async def _adopt(self, result: dict[str, Any], version: str) -> dict[str, Any]: ...
        def _fail_all(self, reason: str) -> None: ...

    async def _establish(self) -> dict[str, Any]:
        """Detect the upstream's era (versioning, "Backward Compatibility with Initialization-Based
        Versions") and set the connection up for it: the DiscoverResult or the InitializeResult."""
        self.era = None
        self.initialize_result = self.discover_result = None
        self.protocol_version = None
        era = self.config.era
        if era == LEGACY or not self.SPEAKS_MODERN:
            return await self._handshake()
        try:
            found = await self._probe(required=era == MODERN)
        except UpstreamUnavailable as exc:
            if self.HTTP or era == MODERN or self._open:
                raise
            # Some session-era stdio servers exit on a request before `initialize` (older SDKs): any error
            # means the session era, so start the process again and run the handshake.
            logger.info(
                "%s: the upstream did not survive server/discover (%s); starting it again", self.config.name, exc
            )
            await self._restart_transport()
            return await self._handshake()
        if found is not None:
            return await self._adopt(*found)
        try:
            return await self._handshake()
        except UpstreamUnavailable as exc:
            # A modern server can answer `initialize` with UnsupportedProtocolVersionError when the probe
            # reached it late (a slow stdio start): that names its versions, so probe once more.
            cause = exc.__cause__
            if not (isinstance(cause, UpstreamError) and cause.code == UNSUPPORTED_PROTOCOL_VERSION):
                raise
            if probe.probe_verdict(cause, http=self.HTTP)[0] != "retry":
                raise
            found = await self._probe(required=True)
            assert found is not None
            return await self._adopt(*found)

    async def _probe(self, *, required: bool) -> tuple[dict[str, Any], str] | None:
        """`server/discover` with the modern envelope: (result, version) for a modern upstream, None for
        a legacy one. Outages raise: they say nothing about the era."""
        name = self.config.name
        version = MODERN_VERSIONS[0]
        why = ""
        for _attempt in range(2):
            params = stateless.enveloped({}, version=version, config=self.config)
            timeout = None if self.HTTP else self.config.probe_timeout
            try:
                result = await self._call(
                    SERVER_DISCOVER, params, timeout=timeout, on_message=None, internal=True, modern=version
                )
            except UpstreamError as exc:
                verdict, retry = probe.probe_verdict(exc, http=self.HTTP)
                if verdict == "retry" and retry is not None and _attempt == 0:
                    version = retry  # versioning: retry once with a version from `supported`
                    continue
                if verdict in ("modern-refused", "retry"):
                    raise UpstreamUnavailable(f"{name}: the upstream refused server/discover: {exc}") from exc
                why = f"server/discover was answered with an error: {exc}"
            except UpstreamTimeout:
                why = f"server/discover got no answer within {self.config.probe_timeout:g} s"
            except UpstreamUnavailable as exc:
                status = exc.status
                if not self.HTTP or status is None or not 400 <= status < 500 or status in (401, 403):
                    raise
                why = f"server/discover was refused with HTTP {status}"
            else:
                chosen = probe.valid_discover(result)
                if chosen is not None:
                    return result, chosen
                why = "the discover result names no 2026-07-28-era version"
            break
        if required:
            raise UpstreamUnavailable(f"{name}: the upstream does not speak MCP 2026-07-28 ({why})")
        logger.debug("%s: speaking the session era: %s", name, why)
        return None

    async def _restart_transport(self) -> None:
        """Close the transport and open it again (a new process), within the same connect()."""
        self._open = False
        self._fail_all(f"{self.config.name}: restarting")
        await self._close_transport(final=False)
        self._generation += 1
        await self._open_transport()
        self._open = True

    async def _handshake(self) -> dict[str, Any]:
        params = {
            "protocolVersion": self.config.protocol_version,
            "capabilities": dict(self.config.client_capabilities),
            "clientInfo": dict(self.config.client_info),
        }
        try:
            result = await self._call(INITIALIZE, params, timeout=None, on_message=None, internal=True)
        except UpstreamError as exc:
            raise UpstreamUnavailable(f"{self.config.name}: initialize was refused: {exc}") from exc
        version = result.get("protocolVersion")
        if version not in LEGACY_VERSIONS:
            raise UpstreamUnavailable(f"{self.config.name}: unsupported protocol version {version!r} in initialize")
        self.protocol_version = version
        self.initialize_result = result
        self.era = LEGACY
        await self._send({"jsonrpc": "2.0", "method": INITIALIZED})
        self._initialized = True
        await self._after_initialize()
        return result
