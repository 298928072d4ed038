"""The upstream MCP backend: a tools/call relayed to the upstream server the tool came from, or, for a
tool that gateways of a redundancy group share, to one of them chosen by ``failover`` (docs/federation.md §4)."""

from __future__ import annotations

import contextlib
from typing import Any

from transports.protocol import limits
from transports.protocol.backends.base import CallContext, ToolBackend
from transports.protocol.catalog import ToolEntry
from transports.protocol.failover import Failover
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.relay import UpstreamDown, UpstreamRelay


class UpstreamMcpBackend(ToolBackend):
    """Tools discovered on an upstream MCP server (integration type ``mcp``)."""

    def __init__(self, relay: UpstreamRelay, *, failover: Failover | None = None) -> None:
        self.relay = relay
        self.failover = failover if failover is not None else Failover()

    def available(self, tool: ToolEntry) -> bool:
        return tool.gateway is not None

    @staticmethod
    def _slot(context: CallContext, gateway: str) -> contextlib.AbstractAsyncContextManager[None]:
        """One of the upstream's slots (Gateway.max_concurrency or GATEWAY_UPSTREAM_MAX_CONCURRENCY calls
        at once per process): waits up to GATEWAY_UPSTREAM_QUEUE_TIMEOUT, then ``limits.UpstreamBusy``."""
        limiter = limits.active()
        bound, name = limiter.upstream_bound(context.exchange.snapshot.upstreams.get(gateway))
        if not bound:
            return contextlib.nullcontext()
        return limiter.upstreams.slot(gateway, bound, name, limiter.queue_timeout)

    async def call(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        tool = context.tool
        assert tool.gateway is not None
        if tool.alternates:
            return await self._call_any(arguments, context)
        breakers = self.failover.breakers
        params = {**context.params, "name": tool.upstream_name, "arguments": arguments}
        try:
            async with self._slot(context, tool.gateway):
                result = await self.relay.request(
                    context.exchange,
                    tool.gateway,
                    "tools/call",
                    params,
                    timeout=context.timeout,
                    tool=tool.upstream_name,
                )
        except limits.UpstreamBusy:  # not sent: no verdict on the upstream
            raise
        except UpstreamDown:
            breakers.failed(tool.gateway)
            raise
        except JsonRpcError:
            breakers.succeeded(tool.gateway)  # the upstream answered
            raise
        breakers.succeeded(tool.gateway)
        return result

    async def _call_any(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        """Try the candidates in the chooser's order until one answers; only ``UpstreamDown`` (nothing
        reached the upstream, or no answer came) moves on, so an answered call is never sent twice."""
        tool = context.tool
        assert tool.gateway is not None
        breakers = self.failover.breakers
        providers = ((tool.gateway, tool.upstream_name), *tool.alternates)
        order = self.failover.candidates(tool.name, providers, context.exchange.snapshot.upstreams)
        tried: list[str] = []
        last: UpstreamDown | None = None
        for index, (gateway, upstream_name) in enumerate(order):
            claimed = breakers.begin(gateway)
            # A circuit that opened meanwhile is passed over, unless it is the one candidate left to try.
            if claimed is None and (tried or index < len(order) - 1):
                continue
            tried.append(gateway)
            params = {**context.params, "name": upstream_name, "arguments": arguments}
            try:
                async with self._slot(context, gateway):
                    result = await self.relay.request(
                        context.exchange, gateway, "tools/call", params, timeout=context.timeout, tool=upstream_name
                    )
            except UpstreamDown as exc:
                breakers.failed(gateway)
                last = exc
                continue
            except limits.UpstreamBusy:  # not sent: no verdict on the upstream
                if claimed == "trial":
                    breakers.release(gateway)
                raise
            except JsonRpcError:
                breakers.succeeded(gateway)
                raise
            except BaseException:  # cancelled: no verdict on the upstream
                if claimed == "trial":
                    breakers.release(gateway)
                raise
            breakers.succeeded(gateway)
            return result
        assert last is not None
        if len(tried) > 1:
            raise UpstreamDown(
                last.code, f"{last.message} (tried every upstream of the redundancy group: {', '.join(tried)})"
            ) from None
        raise last
