"""Profiles (--profile): py-spy on the serving process during chosen cells, and parsing its stacks."""

# ruff: noqa: E501
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

from cells import measure_cell
from config import (
    ROOT,
)
from targets import (
    LiveTarget,
)
from workloads import (
    WORKLOADS,
)

PROFILE_CELLS = (("gw-daphne-sqlite", "tools_call", 1), ("gw-daphne-sqlite", "tools_call", 32))

# Where a leaf frame's time goes: by function for the socket system calls, else by its file (first match wins).
LEAF_FUNCTIONS: dict[str, str] = {
    "untilConcludes (twisted/python/util.py)": "socket send() to the client (Twisted writeSomeData; kernel time)",
    "_SelectorSocketTransport.write (asyncio/selector_events.py)": "socket send() to the upstream (asyncio transport; kernel time)",
}
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("JSON (orjson/json)", ("/orjson", "/json/")),
    (
        "upstream client (transports/protocol/upstream, aiohttp, yarl, multidict)",
        ("/transports/protocol/upstream/", "/aiohttp/", "/yarl/", "/multidict/", "/aiohappyeyeballs/", "/propcache/"),
    ),
    (
        "daphne + Twisted (HTTP parsing, reactor, access log)",
        ("/twisted/", "/daphne/", "/zope/", "/autobahn/", "/txaio/", "/incremental/", "/email/"),
    ),
    ("Channels + asgiref (ASGI routing, consumer plumbing)", ("/channels/", "/asgiref/")),
    ("Django", ("/django/",)),
    ("auth crypto (PyJWT, cryptography)", ("/jwt/", "/cryptography/")),
    (
        "the gateway's own code (endpoint, protocol core, auth, catalog)",
        ("/transports/", "/registry/", "/gateway_project/", "/federation/"),
    ),
    ("asyncio (event loop, tasks, futures, selectors)", ("/asyncio/", "/selectors.py", "/contextvars", "/concurrent/")),
]
# Leaves that are a wait, not work: py-spy cannot always tell a thread blocked in epoll from one running.
WAITING = ("EpollSelector.select (selectors.py)",)


def _frame_file(frame: str) -> str:
    """'func (path)' -> '/path' (py-spy gives paths relative to site-packages or the stdlib)."""
    if frame.endswith(")") and " (" in frame:
        return "/" + frame.rsplit(" (", 1)[1][:-1].lstrip("/")
    return frame


def short_frame(frame: str) -> str:
    if frame.endswith(")") and " (" in frame:
        func, path = frame[:-1].rsplit(" (", 1)
        for marker in ("site-packages/", "/lib/python3.12/", str(ROOT) + "/"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        return f"{func} ({path})"
    return frame


def categorize(leaf: str) -> str:
    if leaf in LEAF_FUNCTIONS:
        return LEAF_FUNCTIONS[leaf]
    path = _frame_file(leaf)
    for name, needles in CATEGORIES:
        if any(n in path for n in needles):
            return name
    return "other (stdlib and the rest)"


def parse_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """py-spy raw (collapsed) stacks -> own and total share per function, own share per category."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    cats: dict[str, int] = {}
    samples = waiting = 0
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [short_frame(fr) for fr in stack.split(";") if fr and not fr.startswith("process ")]
            frames = [fr for fr in frames if not fr.startswith("thread ")]
            if not frames:
                continue
            leaf = frames[-1]
            if leaf in WAITING:
                waiting += count
                continue
            samples += count
            own[leaf] = own.get(leaf, 0) + count
            for fr in set(frames):
                total[fr] = total.get(fr, 0) + count
            cat = categorize(leaf)
            cats[cat] = cats.get(cat, 0) + count
    if not samples:
        return {"samples": 0, "waiting": waiting}

    def pct(n: int) -> float:
        return round(100 * n / samples, 1)

    return {
        "samples": samples,
        "waiting": waiting,
        "top_own": [(fr, pct(n), pct(total[fr])) for fr, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]],
        "top_total": [
            (fr, pct(own.get(fr, 0)), pct(n)) for fr, n in sorted(total.items(), key=lambda kv: -kv[1])[:top]
        ],
        "categories": [(name, pct(n)) for name, n in sorted(cats.items(), key=lambda kv: -kv[1])],
    }


def run_profiles(
    live: list[LiveTarget], state: Path, warmup: float, duration: float, targets: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Each PROFILE_CELLS cell once more, with py-spy attached (not part of the results' medians); with
    ``targets``, the same tools_call cells on those targets instead."""
    out = []
    by_name = {t.spec.name: t for t in live}
    workloads = {w.name: w for w in WORKLOADS}
    cells = [(t, w, c) for t in targets for _, w, c in PROFILE_CELLS] if targets else PROFILE_CELLS
    for target_name, workload_name, concurrency in cells:
        target = by_name.get(target_name)
        if target is None:
            continue
        raw = state / f"profile-{target_name}-{workload_name}-c{concurrency}.txt"
        row = measure_cell(target, workloads[workload_name], concurrency, warmup, duration, profile_out=raw)
        profile = parse_profile(raw)
        if raw.exists():  # the raw stacks stay for a closer look (flame graphs, grep); the state dir goes
            kept = ROOT / "test-artifacts" / "profiles" / raw.name
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(raw, kept)
        out.append(
            {
                "target": target_name,
                "workload": workload_name,
                "concurrency": concurrency,
                "duration": duration,
                "cell": {k: row[k] for k in ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_op", "ops")},
                **profile,
            }
        )
        print(
            f"  profile {target_name} {workload_name} c={concurrency}: {profile.get('samples', 0)} samples, "
            f"cpu {row['server_cpu_ms_per_op']} ms/op",
            flush=True,
        )
    return out
