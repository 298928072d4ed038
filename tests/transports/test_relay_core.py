"""The protocol core's relay bookkeeping, in process: refreshes after an upstream's list changes, and the
upstream resource subscriptions held for sessions and listen streams."""

from __future__ import annotations

import asyncio

from transports.protocol import hooks
from transports.protocol.server import McpCore


async def test_list_changes_during_a_refresh_cause_one_more_refresh():
    """Notifications of one change (one per connection to the upstream) make one refresh, at once; a change
    announced while a refresh runs makes one more after it (that refresh may have read the old lists)."""
    core = McpCore()
    started: list[float] = []
    release = asyncio.Event()

    async def receiver(gateway: str) -> None:
        started.append(asyncio.get_running_loop().time())
        await release.wait()

    hooks.upstream_lists_changed.connect(receiver)
    try:
        begun = asyncio.get_running_loop().time()
        for _ in range(3):
            core.upstream_lists_changed("fx")
        while not started:
            await asyncio.sleep(0.005)
        assert started[0] - begun < 0.15  # no long debounce
        core.upstream_lists_changed("fx")  # during the refresh
        core.upstream_lists_changed("fx")
        release.set()
        await asyncio.wait_for(core._refreshing["fx"], 5)
        assert len(started) == 2
    finally:
        hooks.upstream_lists_changed.disconnect(receiver)
