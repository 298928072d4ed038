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

For the Prometheus metrics (``transports/metrics.py`` reads ``metrics()`` at scrape time) each
(tool, gateway) also keeps a latency histogram per outcome ("ok", "error") with the fixed bounds
``BUCKETS``, and ``Recorder.request``, called by the core's request entry (``McpCore.answer``,
``McpCore.handle_stateless``) once per MCP request of every method, keeps one per (method, outcome)
("ok", "error": a JSON-RPC error or an ``isError`` result, "cancelled": no answer was sent).

The cost per call: one clock read (the caller took the other), a tuple, a dict lookup, one
comparison with the end of the current minute, two or three list item updates, and for the
histogram one bisect into the 13 bounds and two more updates. ``snapshot()`` and ``metrics()`` run
off the call path (a publisher thread, a scrape); they only copy, so they may run on another thread
than the one recording.

The access log (``AccessLog``: one line per MCP request, logger ``transports.access``) lives here
too; the Django side (``transports/observability.py``) sets ``access`` from the settings. Off, it
costs the request entry one ``is None`` check.

No Django here: the protocol core imports this module.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Collection, Mapping
from typing import Any

MINUTES = 60  # the ring: one hour of one-minute buckets
MAX_SERIES = 10_000  # (tool, gateway) pairs kept; more are counted together under OTHER
UNKNOWN_TOOL = ""  # calls naming no tool of the endpoint's view (or no name at all)
OTHER = "(other)"
LOCAL = ""  # the gateway of local tools (REST, CLI, Python function)
# Latency histogram bounds in seconds (Prometheus ``le``); a last count holds the slower ones (+Inf).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Outcomes of tools/call series (index: the ``error`` flag) and of requests (index: what
# ``outcome_of`` answers).
TOOL_OUTCOMES = ("ok", "error")
OK, ERROR, CANCELLED = 0, 1, 2
REQUEST_OUTCOMES = ("ok", "error", "cancelled")
MAX_METHODS = 64  # method names kept (clients may send any); more are counted under OTHER


def outcome_of(answer: Mapping[str, Any] | None) -> int:
    """OK, ERROR (a JSON-RPC error or a result with ``isError: true``) or CANCELLED (no answer)."""
    if answer is None:
        return CANCELLED
    if "error" in answer:
        return ERROR
    result = answer.get("result")
    return ERROR if isinstance(result, dict) and result.get("isError") is True else OK


def _histogram() -> list[int]:
    return [0] * (len(BUCKETS) + 1)


class Series:
    """The buckets and totals of one (tool, gateway): ``ring[minute % MINUTES]`` is [minute, calls,
    errors, seconds]; a bucket of an older minute is added to ``totals`` and reset when reused."""

    __slots__ = ("hist", "ring", "sums", "totals")

    def __init__(self) -> None:
        self.ring: list[list[Any]] = [[-1, 0, 0, 0.0] for _ in range(MINUTES)]
        self.totals: list[Any] = [0, 0, 0.0]  # calls, errors, seconds of the buckets reset so far
        # Since the start, per outcome (TOOL_OUTCOMES): the count per latency bucket, the seconds.
        self.hist: tuple[list[int], list[int]] = (_histogram(), _histogram())
        self.sums: list[float] = [0.0, 0.0]

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
        # Per method: a histogram per REQUEST_OUTCOMES, then the seconds per outcome.
        self._requests: dict[str, list[Any]] = {}
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
        self._requests = {}
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
        elapsed = now - started
        bucket[1] += 1
        bucket[3] += elapsed
        if error:
            bucket[2] += 1
        series.hist[error][bisect_left(BUCKETS, elapsed)] += 1
        series.sums[error] += elapsed

    def request(self, method: str, outcome: int, started: float) -> None:
        """One MCP request of ``method`` ended with ``outcome`` (OK, ERROR, CANCELLED); ``started``:
        the clock when it began."""
        elapsed = self.clock() - started
        entry = self._requests.get(method) or self._add_method(method)
        entry[outcome][bisect_left(BUCKETS, elapsed)] += 1
        entry[3][outcome] += elapsed

    def _add_method(self, method: str) -> list[Any]:
        if len(self._requests) >= MAX_METHODS:
            method = OTHER
            if method in self._requests:
                return self._requests[method]
        entry = self._requests[method] = [_histogram(), _histogram(), _histogram(), [0.0, 0.0, 0.0]]
        return entry

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

    def metrics(self) -> dict[str, Any]:
        """The histograms since the start, as plain data (for the Prometheus collector):

        ``{"started": wall seconds, "buckets": BUCKETS, "tools": [[tool, gateway, outcome, counts,
        seconds], ...], "requests": [[method, outcome, counts, seconds], ...]}``; ``counts`` has one
        count per bound and a last one above them (not cumulative); label sets never seen are left out."""
        tools = []
        for (tool, gateway), one in list(self._series.items()):
            for index, outcome in enumerate(TOOL_OUTCOMES):
                counts = list(one.hist[index])
                if any(counts):
                    tools.append([tool, gateway, outcome, counts, one.sums[index]])
        requests = []
        for method, entry in list(self._requests.items()):
            for index, outcome in enumerate(REQUEST_OUTCOMES):
                counts = list(entry[index])
                if any(counts):
                    requests.append([method, outcome, counts, entry[3][index]])
        return {"started": self.started, "buckets": BUCKETS, "tools": tools, "requests": requests}


# This process's recorder (the method table records into it; stats and scrapers read it).
recorder = Recorder()


REDACTED = "(redacted)"  # as registry.audit.redact writes it: one rule for logs and the audit log


def redact(value: Any, keys: Collection[str]) -> Any:
    """``value`` with the value of every object key that contains one of ``keys`` (lower case; "token"
    covers "access_token"), at any depth, replaced: the same rule as registry.audit.redact."""
    if isinstance(value, dict):
        return {
            k: REDACTED if any(word in str(k).lower() for word in keys) else redact(v, keys) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item, keys) for item in value]
    return value


class AccessLog:
    """One line per MCP request on ``logger`` (INFO): user, session, method, tool, gateway,
    duration_ms, outcome, transport, trace_id (when tracing) as the record's extra fields, and the
    arguments (tools/call, prompts/get) only when ``arguments`` is on, with ``redacted`` keys replaced."""

    def __init__(
        self, *, logger: logging.Logger | None = None, arguments: bool = False, redacted: Collection[str] = ()
    ) -> None:
        self.logger = logger or logging.getLogger("transports.access")
        self.arguments = arguments
        self.redacted = frozenset(key.lower() for key in redacted if key)

    def write(
        self,
        message: Mapping[str, Any],
        outcome: int,
        seconds: float,
        *,
        user: str,
        session: str,
        server: str | None,
        tool: str,
        gateway: str,
        transport: str = "",
        trace_id: str = "",
    ) -> None:
        method = message.get("method", "")
        fields: dict[str, Any] = {
            "user": user,
            "session": session,
            "server": server or "",
            "method": method,
            "tool": tool,
            "gateway": gateway,
            "duration_ms": round(seconds * 1000.0, 3),
            "outcome": REQUEST_OUTCOMES[outcome],
            "transport": transport,
            "request_id": message.get("id"),
        }
        if trace_id:
            fields["trace_id"] = trace_id
        if self.arguments:
            params = message.get("params")
            arguments = params.get("arguments") if isinstance(params, dict) else None
            if arguments is not None:
                fields["arguments"] = redact(arguments, self.redacted)
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        # The record is made here rather than by logger.info(), which looks up the caller's frame for
        # every line (a measurable part of a tools/call with the access log on).
        args = (method, tool, f" ({gateway})" if gateway else "", user, fields["outcome"], fields["duration_ms"])
        record = logger.makeRecord(
            logger.name, logging.INFO, __file__, 0, "%s %s%s by %s: %s in %.1f ms", args, None, "write", fields
        )
        logger.handle(record)


# The access log of this process; None: off (the Django side sets it from GATEWAY_ACCESS_LOG).
access: AccessLog | None = None
