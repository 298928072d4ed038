"""What this process counts about its own traffic: the one observability home of the protocol core.

Counters live in process (architecture, "Homes": "no query on the hot path; counters in process,
scraped"). ``Recorder.record`` is called once per tools/call, by ``Methods.tools_call``, the one place
every tools/call of both eras passes through (session requests of every transport, 2026-07-28
requests, the admin's and the REST API's test calls). Per (tool, gateway) it keeps:

- a ring of ``MINUTES`` one-minute buckets of (calls, errors, total duration in ms), keyed by the
  wall-clock minute, so the buckets of several replicas line up when they are summed;
- totals since the process started (for scrapers that want counters that only go up): a bucket's
  counts move there when the bucket is reused, so the call path does not keep them.

What counts as an error: the call ended in a JSON-RPC error (unknown tool, invalid or forbidden call,
an upstream that answered with an error, could not be reached or did not answer in time, an
internal error), or its result says ``isError: true`` (a tool that ran and failed, arguments that
failed a wrapped tool's schema). Every backend, the upstream MCP relay included, hands the core a
parsed result, so ``isError`` of upstream answers is seen too. A call the client cancelled (or whose
2026-07-28 round expired) counts as a call, not as an error. Requests refused before the method
table (a bad envelope, missing ``Mcp-Param-*`` headers, an unknown virtual server, a rejected
``requestState``) are not tools/calls here. A tool of a redundancy group is counted under its own
gateway, whichever gateway of the group answered. The duration runs from the method table to the
answer; for a 2026-07-28 call answered in several rounds it includes the client's time to answer.

The cost per call: one clock read (the caller took the other), a tuple, a dict lookup, one
comparison with the end of the current minute, and two or three list item updates. ``snapshot()``
runs off the call path (a publisher thread, a scrape); it only copies, so it may run on another
thread than the one recording.

No Django here: the protocol core imports this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

MINUTES = 60  # the ring: one hour of one-minute buckets
MAX_SERIES = 10_000  # (tool, gateway) pairs kept; more are counted together under OTHER
UNKNOWN_TOOL = ""  # calls naming no tool of the endpoint's view (or no name at all)
OTHER = "(other)"
LOCAL = ""  # the gateway of local tools (REST, CLI, Python function)


class Series:
    """The buckets and totals of one (tool, gateway): ``ring[minute % MINUTES]`` is [minute, calls,
    errors, seconds]; a bucket of an older minute is added to ``totals`` and reset when reused."""

    __slots__ = ("ring", "totals")

    def __init__(self) -> None:
        self.ring: list[list[Any]] = [[-1, 0, 0, 0.0] for _ in range(MINUTES)]
        self.totals: list[Any] = [0, 0, 0.0]  # calls, errors, seconds of the buckets reset so far

    def reuse(self, bucket: list[Any], minute: int) -> None:
        totals = self.totals
        totals[0] += bucket[1]
        totals[1] += bucket[2]
        totals[2] += bucket[3]
        bucket[0], bucket[1], bucket[2], bucket[3] = minute, 0, 0, 0.0


class Recorder:
    """Counts tools/calls per (tool, gateway) for the last hour and since the start (see module doc).

    ``clock``: monotonic seconds (the caller's ``started`` comes from the same clock); ``epoch``: what
    to add to the clock to get wall-clock seconds (measured once, so each call reads one clock)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, epoch: float | None = None) -> None:
        self.clock = clock
        self._epoch = time.time() - clock() if epoch is None else epoch
        self._series: dict[tuple[str, str], Series] = {}
        # The current minute, its slot in the rings, and the clock when it ends (so a call compares
        # one number instead of computing its minute).
        self._minute, self._slot, self._minute_ends = 0, 0, float("-inf")
        self.started = self.wall()

    def wall(self) -> float:
        """Wall-clock seconds now, by this recorder's clock."""
        return self.clock() + self._epoch

    def reset(self) -> None:
        """Forget every count (tests); the window starts again now."""
        self._series = {}
        self.started = self.wall()

    def record(self, tool: str, gateway: str, error: bool, started: float) -> None:
        """One tools/call of ``tool`` (UNKNOWN_TOOL: none) from ``gateway`` (LOCAL: a local tool) ended;
        ``started``: the clock when it began."""
        now = self.clock()
        series = self._series.get((tool, gateway)) or self._add(tool, gateway)
        if now >= self._minute_ends:
            self._turn(now)
        bucket = series.ring[self._slot]
        if bucket[0] != self._minute:
            series.reuse(bucket, self._minute)
        bucket[1] += 1
        bucket[3] += now - started
        if error:
            bucket[2] += 1

    def _turn(self, now: float) -> None:
        minute = int((now + self._epoch) // 60)
        self._minute, self._slot, self._minute_ends = minute, minute % MINUTES, (minute + 1) * 60 - self._epoch

    def _add(self, tool: str, gateway: str) -> Series:
        if len(self._series) >= MAX_SERIES:
            key = (OTHER, "")
            series = self._series.get(key)
            if series is not None:
                return series
        else:
            key = (tool, gateway)
        series = self._series[key] = Series()
        return series

    def snapshot(self) -> dict[str, Any]:
        """What this process counted, as plain data (picklable and JSON-able):

        ``{"started": wall seconds, "at": wall seconds, "minute": the current minute,
        "series": [[tool, gateway, [[minute, calls, errors, ms], ...], [calls, errors, ms]], ...]}``
        with the buckets of the last MINUTES minutes that saw a call, oldest first, and the totals since
        the start."""
        at = self.wall()
        minute = int(at // 60)
        oldest = minute - MINUTES + 1
        series = []
        # list() copies the dict in one step (no other thread runs meanwhile), so a recording thread
        # adding a series cannot break the iteration; a bucket read mid-update is off by one call.
        for (tool, gateway), one in list(self._series.items()):
            ring = [list(bucket) for bucket in list(one.ring) if bucket[1]]
            calls, errors, seconds = one.totals
            for bucket in ring:
                calls, errors, seconds = calls + bucket[1], errors + bucket[2], seconds + bucket[3]
            buckets = sorted([b[0], b[1], b[2], b[3] * 1000.0] for b in ring if b[0] >= oldest)
            series.append([tool, gateway, buckets, [calls, errors, seconds * 1000.0]])
        return {"started": self.started, "at": at, "minute": minute, "series": series}


# This process's recorder (the method table records into it; stats and scrapers read it).
recorder = Recorder()
