"""Multi-round-trip requests (2026-07-28, basic/patterns/mrtr) in front of upstream calls that ask the
client something mid-call.

A modern client's `tools/call`, `resources/read` or `prompts/get` runs as a *parked call*: a task
that keeps the upstream call going between the client's retries. When the upstream asks the client
something (a session-era `elicitation/create`, `sampling/createMessage` or `roots/list`, or a modern
upstream's `input_required`, which the upstream client turns into the same requests), the question
is held as an *ask*, and the client's request ends with an `InputRequiredResult` listing the open
asks and a sealed `requestState`. The client's retry (a new request id) carries the answers; they
resolve the asks, and the same upstream call goes on until it completes or asks again.

Parked calls live in this process (bounded in number and in time); sharing them between replicas
is the replicas issue's work, behind the same interface.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from transports.protocol import jsonrpc
from transports.protocol.jsonrpc import JsonRpcError

Emit = Callable[[dict[str, Any]], Awaitable[None]]
# An upstream may name its question (`_meta` of the request); the name becomes the inputRequests key.
INPUT_KEY_META = "dev.mcp-gateway/inputKey"
_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
SETTLE_SECONDS = 0.03  # after a question, how long to wait for more before answering the round
SETTLE_MAX_SECONDS = 0.25


@dataclass
class Ask:
    key: str
    method: str
    params: dict[str, Any]
    future: asyncio.Future[dict[str, Any]]


@dataclass
class ParkedCall:
    """One modern request whose upstream call outlives the client's HTTP request."""

    id: str
    principal: str
    server: str | None
    digest: str
    expires: float
    round: int = 0
    task: asyncio.Task[dict[str, Any] | None] | None = None
    asks: dict[str, Ask] = field(default_factory=dict)
    abort: JsonRpcError | None = None
    emit_to: Emit | None = None
    active: bool = True  # a client request is waiting on this call now (its state cannot be used again)
    # Answers the client sent with its first request (inputResponses without a requestState): a question
    # of the same key is answered with them instead of being asked (once each).
    early: dict[str, dict[str, Any]] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _keys: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- from the upstream side (inside the call's task) ----------------------------------------

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Hold a question for the client; returns its answer as {"result": ...} or {"error": ...}.

        Its key is the upstream's own name for it when the upstream gave one (a 2026-07-28 upstream's
        inputRequests key, or a session-era upstream's `_meta` input-key hint), else `<kind>-<n>`."""
        meta = params.get("_meta")
        hint = meta.get(INPUT_KEY_META) if isinstance(meta, dict) else None
        if isinstance(meta, dict) and INPUT_KEY_META in meta:
            rest = {k: v for k, v in meta.items() if k != INPUT_KEY_META}
            params = {k: v for k, v in params.items() if k != "_meta"}
            if rest:
                params["_meta"] = rest
        if isinstance(hint, str) and hint in self.early:
            return {"result": self.early.pop(hint)}
        if isinstance(hint, str) and _KEY.fullmatch(hint) and hint not in self.asks:
            key = hint
        else:
            key = f"{method.split('/')[0]}-{next(self._keys)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.asks[key] = Ask(key, method, params, future)
        self._changed.set()
        try:
            return await future
        finally:
            self.asks.pop(key, None)

    def prefill(self, responses: dict[str, Any]) -> None:
        """Keep the answers a client sent before being asked (each must be a result object; others are
        left out, so their question is asked)."""
        self.early.update({key: value for key, value in responses.items() if isinstance(value, dict)})

    def fail(self, error: JsonRpcError) -> None:
        """End the client's request with this error (e.g. a capability the client did not declare)."""
        self.abort = error
        self._changed.set()

    async def emit(self, message: dict[str, Any]) -> None:
        """A notification of the call (progress, log): onto the stream of the current round, if any."""
        if self.emit_to is not None:
            await self.emit_to(message)

    # -- from the client side (the HTTP request of each round) ----------------------------------

    def answer(self, responses: dict[str, Any]) -> None:
        """Resolve the open asks the client answered; unknown keys are ignored (mrtr, Error Handling)."""
        for key, value in responses.items():
            ask = self.asks.get(key)
            if ask is not None and not ask.future.done():
                ask.future.set_result({"result": value})

    def open_asks(self) -> dict[str, Ask]:
        return {key: ask for key, ask in self.asks.items() if not ask.future.done()}

    async def next_round(self) -> tuple[str, Any]:
        """Wait until the call completes ("done", its answer or None when cancelled), fails
        ("error", JsonRpcError) or has questions for the client ("input", {key: Ask})."""
        assert self.task is not None
        while True:
            if self.abort is not None:
                return "error", self.abort
            if self.task.done():
                return "done", self.task.result()
            if self.open_asks():
                # Questions asked together go in one round: wait until no more arrive.
                deadline = time.monotonic() + SETTLE_MAX_SECONDS
                seen = len(self.open_asks())
                while time.monotonic() < deadline and not self.task.done() and self.abort is None:
                    self._changed.clear()
                    try:
                        await asyncio.wait_for(self._changed.wait(), SETTLE_SECONDS)
                    except TimeoutError:
                        if len(self.open_asks()) == seen:
                            break
                    seen = len(self.open_asks())
                if self.abort is not None or self.task.done():
                    continue
                self.round += 1
                return "input", self.open_asks()
            self._changed.clear()
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({changed, self.task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        for ask in self.asks.values():
            if not ask.future.done():
                ask.future.cancel()


class ParkedCalls:
    """The parked calls of this process, bounded in number; each expires ``ttl`` seconds after its
    last round if the client does not come back."""

    def __init__(self, *, ttl: float = 300.0, max_calls: int = 1000) -> None:
        self.ttl = ttl
        self.max_calls = max_calls
        self._calls: dict[str, ParkedCall] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, call: ParkedCall) -> None:
        if len(self._calls) >= self.max_calls:
            raise JsonRpcError(
                jsonrpc.SERVER_ERROR,
                f"Too many calls are waiting for client input on this gateway process (limit {self.max_calls}); "
                "retry later.",
            )
        self._calls[call.id] = call

    def get(self, call_id: str) -> ParkedCall | None:
        return self._calls.get(call_id)

    def park(self, call: ParkedCall) -> None:
        """The client's request ended with questions: keep the call until its retry or the deadline."""
        call.emit_to = None
        call.active = False
        call.expires = time.time() + self.ttl
        self._unschedule(call.id)
        self._timers[call.id] = asyncio.get_running_loop().call_later(self.ttl, self.drop, call.id)

    def resume(self, call: ParkedCall, emit: Emit) -> None:
        self._unschedule(call.id)
        call.emit_to = emit
        call.active = True

    def drop(self, call_id: str) -> None:
        """Forget the call and stop its upstream work."""
        self._unschedule(call_id)
        call = self._calls.pop(call_id, None)
        if call is not None:
            call.cancel()

    def _unschedule(self, call_id: str) -> None:
        timer = self._timers.pop(call_id, None)
        if timer is not None:
            timer.cancel()
