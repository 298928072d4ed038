"""Failover between the gateways of a redundancy group: circuit breakers and the choice of upstream.

A tool that several gateways of one redundancy group offer is one catalog entry with ``alternates``
(``catalog.redundant_providers``). A call of it goes to a candidate chosen here: rows the health checks
call unreachable and gateways whose circuit is open are skipped, the best priority comes first, and
equal priorities take turns (round robin). When the upstream cannot be reached (``relay.UpstreamDown``)
the caller tries the next candidate; an error the upstream answered ends the call.

The breakers are per process (each replica learns on its own, from its own calls): ``failures``
failures in a row open a gateway's circuit for ``cooldown`` seconds; then one trial call is let
through (half-open): its success closes the circuit, its failure opens it again. No Django here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

logger = logging.getLogger(__name__)

CircuitState = Literal["closed", "open", "half-open"]
UNREACHABLE = "unreachable"  # registry.choices.Health.UNREACHABLE, as the snapshot's rows carry it


DEFAULT_FAILURES = 3
DEFAULT_COOLDOWN = 30.0


class FailoverSettings(TypedDict, total=False):
    """How the breakers behave (``GATEWAY_CIRCUIT_FAILURES``, ``GATEWAY_CIRCUIT_COOLDOWN``)."""

    failures: int
    cooldown: float


@dataclass
class _Circuit:
    failures: int = 0  # in a row
    opened_at: float | None = None
    trial: bool = False  # a half-open trial call is under way


class CircuitBreakers:
    """One circuit per gateway name, in this process."""

    def __init__(
        self,
        *,
        failures: int = DEFAULT_FAILURES,
        cooldown: float = DEFAULT_COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = max(1, failures)
        self.cooldown = cooldown
        self.clock = clock
        # Only gateways that failed lately have an entry: a healthy gateway's calls cost one dict lookup.
        self._circuits: dict[str, _Circuit] = {}

    def state(self, gateway: str) -> CircuitState:
        """closed (calls go through), open (none until the cooldown ends), half-open (one trial may go)."""
        circuit = self._circuits.get(gateway)
        if circuit is None or circuit.opened_at is None:
            return "closed"
        if self.clock() - circuit.opened_at < self.cooldown:
            return "open"
        return "half-open"

    def available(self, gateway: str) -> bool:
        """Whether a call may go to ``gateway`` now (closed, or half-open with no trial under way)."""
        circuit = self._circuits.get(gateway)
        if circuit is None or circuit.opened_at is None:
            return True
        return not circuit.trial and self.clock() - circuit.opened_at >= self.cooldown

    def begin(self, gateway: str) -> Literal["go", "trial"] | None:
        """Claim a call to ``gateway``: "go" (closed), "trial" (the half-open circuit's one trial call,
        now taken: end it with ``succeeded``, ``failed`` or ``release``), None (open: no call now)."""
        circuit = self._circuits.get(gateway)
        if circuit is None or circuit.opened_at is None:
            return "go"
        if circuit.trial or self.clock() - circuit.opened_at < self.cooldown:
            return None
        circuit.trial = True
        return "trial"

    def release(self, gateway: str) -> None:
        """A trial call ended with no verdict (cancelled): the next call may be the trial."""
        circuit = self._circuits.get(gateway)
        if circuit is not None:
            circuit.trial = False

    def succeeded(self, gateway: str) -> None:
        """The upstream answered (a result or an error of its own): its circuit closes."""
        if gateway in self._circuits:
            circuit = self._circuits.pop(gateway)
            if circuit.opened_at is not None:
                logger.warning("circuit of upstream %r closed: it answers again", gateway)

    def failed(self, gateway: str) -> None:
        """The upstream could not be reached: one more failure in a row; open at the threshold, and
        again at once when a half-open trial fails."""
        circuit = self._circuits.setdefault(gateway, _Circuit())
        circuit.failures += 1
        reopen = circuit.opened_at is not None and (circuit.trial or self.clock() - circuit.opened_at >= self.cooldown)
        circuit.trial = False
        if reopen or (circuit.opened_at is None and circuit.failures >= self.failures):
            circuit.opened_at = self.clock()
            logger.warning(
                "circuit of upstream %r open: %d failures in a row; no calls for %g s, then one trial call",
                gateway,
                circuit.failures,
                self.cooldown,
            )

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Each gateway with a failure on record: its state and failures in a row (for logs and tests)."""
        return {name: {"state": self.state(name), "failures": c.failures} for name, c in self._circuits.items()}


class Failover:
    """The breakers of this process and the turn of each shared tool among its candidates."""

    def __init__(
        self, *, settings: FailoverSettings | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        settings = settings or {}
        self.breakers = CircuitBreakers(
            failures=int(settings.get("failures", DEFAULT_FAILURES)),
            cooldown=float(settings.get("cooldown", DEFAULT_COOLDOWN)),
            clock=clock,
        )
        self._turns: dict[str, int] = {}

    def candidates(
        self, tool: str, providers: Sequence[tuple[str, str]], upstreams: Mapping[str, Mapping[str, Any]]
    ) -> list[tuple[str, str]]:
        """The (gateway, upstream name) pairs to try for one call of ``tool``, in order: not unreachable,
        circuit not open, best priority first, equal priorities in turn. When every one is excluded, the
        best one alone, so the caller gets its real error rather than a made-up one."""
        turn = self._turns.get(tool, 0)
        self._turns[tool] = turn + 1
        tiers: dict[int, list[tuple[str, str]]] = {}
        best: tuple[int, int, tuple[str, str]] | None = None
        for index, provider in enumerate(providers):
            row = upstreams.get(provider[0])
            priority = int(row.get("priority") or 0) if row is not None else 0
            if best is None or (priority, index) < best[:2]:
                best = (priority, index, provider)
            if row is None or row.get("health") == UNREACHABLE or not self.breakers.available(provider[0]):
                continue
            tiers.setdefault(priority, []).append(provider)
        ordered: list[tuple[str, str]] = []
        for priority in sorted(tiers):
            tier = tiers[priority]
            shift = turn % len(tier)
            ordered += tier[shift:] + tier[:shift]
        if not ordered and best is not None:
            ordered.append(best[2])
        return ordered
