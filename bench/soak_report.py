"""The soak's verdicts and its section of docs/performance.md (bench/soak.py), which shows the latest run
on each database.

A series is **flat** when the median of its last 20% of samples exceeds the median of its first 20%
after the warm-up by no more than its tolerance (a fall is flat too). Medians of whole windows, not single
samples: the counts of connections, tasks and streams move with what the clients happen to be doing at the
moment of a sample. The tolerances (``SERIES``) and why they are what they are are printed with the figures
(``TOLERANCE_NOTE``). The least-squares slope over the judged samples is given beside, per hour. The series
that follow the traffic rate (``AGAINST``) are judged on their residual after what the traffic of the same
sample explains (bench/soak_fit.py), and the checkpoints at rest compare states with no abandoned session
alive (``rest_checks``).
"""

# ruff: noqa: E501, RUF001
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from config import DOC_PATH, ROOT
from soak_fit import ops_per_minute, residuals, slope_per_hour, traffic_rates, window_median

HEADING = "## Soak"
FINDINGS_PATH = ROOT / "bench" / "soak_findings.md"  # hand-written, embedded in the section
# The section shows the latest run on each database (config["db"]), in this order, under these headings.
DATABASES = {"sqlite": "SQLite (embedded default)", "postgres": "PostgreSQL + Redis"}
RAW_RESULTS = re.compile(r"Raw results: `(bench/results/[^`]+\.json)`")

# name -> (label, absolute tolerance, relative tolerance of the first window's median)
SERIES: dict[str, tuple[str, float, float]] = {
    "rss_mb": ("RSS (MB)", 8.0, 0.05),
    "fds": ("open file descriptors", 5.0, 0.10),
    "tasks": ("asyncio tasks", 5.0, 0.10),
    "threads": ("threads", 2.0, 0.0),  # plus the on-demand pools' capacity: see pool_threads()
    "stdio": ("stdio upstream processes", 1.0, 0.0),
    "session_objects": ("session objects held", 5.0, 0.10),
    "sessions": ("live sessions", 5.0, 0.10),
    "streams": ("open streams", 3.0, 0.10),
    "redis_keys": ("Redis keys under the prefix", 10.0, 0.15),
}
# Counts of sessions that live an idle period after their last request (the abandoned ones among them arrive
# at random): their number in a window varies like a Poisson count, so a window median may differ from
# another by about 3 standard deviations (3 √n) without anything kept.
POISSON = {"sessions", "session_objects"}

TOLERANCE_NOTE = (
    "Tolerances: RSS 8 MB or 5% (whichever is larger): CPython keeps freed memory in its arenas, and caches "
    "that are bounded by design fill during the first hour (per-minute call counters kept for 60 minutes, "
    "credentials, the Redis store's local session cache), so a few MB of drift is no leak, while 1 KB kept per "
    "session, or 100 bytes per operation, over a 30-minute run's sessions and operations is well above it. "
    "File descriptors and asyncio tasks 5 or 10%, streams 3 or 10%: they count what is open at the moment of a "
    "sample (connections, calls in flight), which moves with the traffic and the machine's load (tasks beyond what "
    "the live sessions and streams explain); the checkpoints at rest judge them to within 3. Live sessions and session objects 5, 10% or 3 √n: the abandoned sessions "
    "among them live an idle period and arrive at random, so their number varies like a Poisson count (a window "
    "shorter than a few idle periods, as in short runs, sees that most). Redis keys 10 or 15%: most are the logs "
    "of the request streams of the last idle period + 60 s, so their number follows the request rate (judged beyond "
    "the live sessions and ops/min). Judged beyond the traffic, a relative tolerance is of the busier window, "
    "since the fit's error grows with the level the traffic brings. What that "
    "catches in a 30-minute run (about 10,000 sessions here): a task or a descriptor kept per thousand sessions "
    "(the checkpoints' 3), a session object kept per ten minutes (the checkpoints' 3, with the abandoned "
    "sessions expired; during the traffic, one kept per minute beyond what the live sessions explain), a "
    "kilobyte per session. Threads: 2 plus the capacity of the pools that start threads on demand (the event loop's default "
    "executor, `asyncio_N`, at most min(32, CPUs + 4); the in-process scheduler's `gateway-job_N`, "
    "GATEWAY_SCHEDULER_WORKERS = 4): the count climbs in steps until each pool has met its busiest moment, "
    "which can come late in a run. Stdio upstream processes: 1 (the gateway runs one per upstream and set of "
    "client capabilities, reaped after GATEWAY_STDIO_IDLE_TIMEOUT)."
)

SCHEDULER_WORKERS = 4  # GATEWAY_SCHEDULER_WORKERS' default, which the soak does not change


def pool_threads(nproc: int) -> int:
    """How many threads the gateway's on-demand pools may start: asyncio's default executor
    (min(32, CPUs + 4), as concurrent.futures sizes it) and the in-process scheduler's workers."""
    return min(32, nproc + 4) + SCHEDULER_WORKERS


# Series whose level follows the traffic rate, not only what is kept: the clients pace themselves by think
# time, so a machine whose load falls mid-run serves 2-3x the operations per minute, with that many more
# sessions in flight and abandoned ones waiting out the idle timeout, and the tasks, session objects and Redis
# keys that go with them. These are judged on what the traffic of the same sample does not explain: the
# residual after a least-squares fit on the drivers (with an intercept) over the judged samples. Something kept
# with no session or stream behind it still grows in the residual; something kept per session that grows
# with the sessions is what the checkpoints at rest catch (there the abandoned sessions have expired).
# "rate": operations per minute over the last idle timeout (the window an abandoned session lives);
# "log_rate": over the lifetime of a request stream's log in Redis (the idle timeout + 60 s).
AGAINST: dict[str, tuple[str, tuple[str, ...]]] = {
    "tasks": ("live sessions and open streams", ("sessions", "streams")),
    "session_objects": ("live sessions", ("sessions",)),
    "sessions": ("ops/min", ("rate",)),
    "redis_keys": ("live sessions and ops/min", ("sessions", "log_rate")),
}


def judge(
    samples: list[dict[str, Any]],
    warmup: float,
    nproc: int = 2,
    settle: dict[str, float] | None = None,
    rate_window: float = 60.0,
    log_window: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Each series' verdict; ``settle``: seconds a series needs to reach its steady state (a warm-up shorter
    than that leaves the series unjudged, since its ramp would read as growth); ``rate_window``: the seconds
    the traffic rate of a sample is measured over (the idle timeout), ``log_window`` that for the stream
    logs (default: the same)."""
    judged = [s for s in samples if s.get("phase") == "run" and s["t"] >= warmup]
    rates = {"rate": traffic_rates(samples, rate_window), "log_rate": traffic_rates(samples, log_window or rate_window)}
    out: dict[str, dict[str, Any]] = {}
    for name, (_label, absolute, relative) in SERIES.items():
        if name == "threads":
            absolute += pool_threads(nproc)
        against, driver_names = AGAINST.get(name, ("", ()))
        rows = [s for s in judged if s.get(name) is not None]
        drivers: list[list[float]] = []
        if driver_names:
            with_drivers = [
                s
                for s in rows
                if all((rates[d].get(s["t"]) if d in rates else s.get(d)) is not None for d in driver_names)
            ]
            if len(with_drivers) >= 5:  # runs without the drivers (old ones) are judged on the series alone
                rows = with_drivers
                drivers = [[float(rates[d][s["t"]] if d in rates else s[d]) for d in driver_names] for s in rows]
        points = [(s["t"], float(s[name])) for s in rows]
        if len(points) < 5:
            continue
        k = max(1, round(0.2 * len(points)))
        first, last = window_median([v for _, v in points[:k]]), window_median([v for _, v in points[-k:]])
        # Judged beyond the traffic, the relative tolerance is of the busier window: the fit's error grows with
        # the level the traffic brings (a count that triples with the rate scatters three times as far).
        level = max(first, last) if name in AGAINST else first
        tolerance = round(max(absolute, relative * level, 3 * math.sqrt(level) if name in POISSON else 0), 2)
        growth = round(last - first, 2)
        out[name] = {
            "first": first,
            "last": last,
            "growth": growth,
            "tolerance": tolerance,
            "slope_per_hour": slope_per_hour(points),
            "min": min(v for _, v in points),
            "max": max(v for _, v in points),
            "samples": len(points),
            "window_samples": k,
        }
        judged_growth = growth
        if drivers:
            resid, coef = residuals([v for _, v in points], drivers)
            judged_growth = round(window_median(resid[-k:]) - window_median(resid[:k]), 2)
            out[name]["against"] = against
            out[name]["coefficients"] = {d: round(c, 3) for d, c in zip(driver_names, coef, strict=True)}
            out[name]["growth_beyond_traffic"] = judged_growth
            out[name]["residual_slope_per_hour"] = slope_per_hour(list(zip([t for t, _ in points], resid, strict=True)))
        out[name]["verdict"] = "flat" if judged_growth <= tolerance else "growing"
        needed = (settle or {}).get(name, 0.0)
        if warmup < needed:
            out[name]["verdict"] = "not judged"
            out[name]["why"] = (
                f"a warm-up of {warmup:g} s is shorter than the {needed:g} s the series needs to level off; "
                f"a run of {math.ceil(needed / 0.4 / 60)} minutes or more judges it"
            )
    return out


def judged_from(report: dict[str, Any]) -> float:
    """Seconds into the traffic where the judged samples start: after the warm-up, and after the quiet
    checkpoint that ends it has been made up for (the sessions it let expire are back after an idle
    timeout)."""
    start = float(report["config"]["warmup_s"])
    rest = (report.get("at_rest") or {}).get("after_warmup")
    if rest is not None:
        start = max(start, rest["t"] + report["config"]["idle_timeout_s"] + report["config"]["interval_s"])
    return start


SESSION_KEY_KINDS = ("s:", "e:", "c:", "u:", "all")
# The quiet checkpoints (bench/soak.py): the short-lived clients have closed their sessions and wait, and the
# sessions abandoned on purpose have outlived the idle timeout (and, on Redis, their stream logs theirs), so
# what the gateway holds is its own and the long-lived clients': the same at each checkpoint whatever the
# traffic rate was, and the tolerances are tight: a few tasks and descriptors for the long-lived clients'
# calls and the upstream connections that happen to be open, a few session objects for the long-lived
# sessions (and one a long-lived client may be reopening).
AT_REST = {"tasks": 3.0, "fds": 3.0, "rss_mb": 8.0, "session_objects": 3.0, "sessions": 3.0}
AT_REST_RELATIVE = {"redis_keys": 0.10}  # the long-lived sessions' keys and the last minutes' stream logs
# After the run and the idle timeout the long-lived clients are gone too, so what is held there can only be
# less than at the first checkpoint: more is what stayed after its sessions were.
AFTER_IDLE = ("tasks", "fds", "redis_keys")


def _tolerances(first: dict[str, Any]) -> dict[str, float]:
    tolerances = dict(AT_REST)
    for name, share in AT_REST_RELATIVE.items():
        if first.get(name) is not None:
            tolerances[name] = round(max(10.0, share * first[name]), 1)
    return tolerances


def _moved(first: dict[str, Any], last: dict[str, Any], names: Any) -> dict[str, tuple[float, float, float]]:
    tolerances = _tolerances(first)
    return {
        name: (first[name], last[name], tolerances[name])
        for name in names
        if first.get(name) is not None and last.get(name) is not None
    }


def _describe(moved: dict[str, tuple[float, float, float]]) -> str:
    return ", ".join(f"{SERIES[n][0]} {a:g} → {b:g} (tolerance {tol:g})" for n, (a, b, tol) in moved.items())


def rest_checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The checkpoints at rest compared with each other, and the state after the idle timeout with the first.
    Checkpoints taken before the abandoned sessions had expired (runs before that rule) held as many of them as
    the traffic rate had left, so they are not compared: such a run's checks say so and pass."""
    rest = report.get("at_rest") or {}
    first, last = rest.get("after_warmup"), rest.get("end")
    if first is None or last is None:
        return []
    if not (first.get("abandoned_expired") and last.get("abandoned_expired")):
        why = (
            f"not judged: this run's checkpoints held the sessions abandoned within the idle timeout "
            f"({first.get('sessions')} and {last.get('sessions')} live sessions), whose number follows the traffic "
            "rate; a run of this version lets them expire first"
        )
        return [
            {"name": "at rest, as after the warm-up", "ok": True, "judged": False, "detail": why},
            {"name": "after the idle timeout, as at the first checkpoint", "ok": True, "judged": False, "detail": why},
        ]
    moved = _moved(first, last, _tolerances(first))
    after = _moved(first, report["after_idle"], AFTER_IDLE)
    return [
        {
            "name": "at rest, as after the warm-up",
            "ok": not [n for n, (a, b, tol) in moved.items() if b - a > tol],
            "detail": _describe(moved)
            + f" ({(last['t'] - first['t']) / 60:.1f} min apart; abandoned sessions expired)",
        },
        {
            "name": "after the idle timeout, as at the first checkpoint",
            "ok": not [n for n, (a, b, tol) in after.items() if b - a > tol],
            "detail": _describe(after) + " (the long-lived clients stopped too: less is expected)",
        },
    ]


def analyse(report: dict[str, Any]) -> dict[str, Any]:
    redis_settle = report["config"].get("redis_settle_s")
    series = judge(
        report["samples"],
        judged_from(report),
        report["machine"].get("nproc") or 2,
        {"redis_keys": redis_settle} if redis_settle else None,
        float(report["config"]["idle_timeout_s"]),
        redis_settle,
    )
    stop, idle, before = report["after_stop"], report["after_idle"], report["before"]
    transports = report["transports"]
    ops = sum(t["ops"] for t in transports.values())
    errors = sum(t["errors"] for t in transports.values())
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"name": name, "ok": bool(ok), "detail": detail})

    growing = [SERIES[n][0] for n, s in series.items() if s["verdict"] == "growing"]
    unjudged = [f"{SERIES[n][0]} ({s['why']})" for n, s in series.items() if s["verdict"] == "not judged"]
    judged = len(series) - len(unjudged)
    check(
        "every series flat",
        not growing,
        ("growing: " + ", ".join(growing) if growing else f"{judged} series judged")
        + ("; not judged: " + "; ".join(unjudged) if unjudged else ""),
    )
    check(
        "no client errors",
        errors == 0,
        f"{errors} errors in {ops:,} operations"
        + (
            " (" + ", ".join(f"{k} {t['errors']}" for k, t in transports.items() if t["errors"]) + ")" if errors else ""
        ),
    )
    check(
        "no client crashed",
        not report.get("client_crashes"),
        "; ".join(report.get("client_crashes") or []) or "every client ran to the end",
    )
    check(
        "streams closed with their clients",
        stop.get("streams") == 0,
        f"{stop.get('streams')} open streams 3 s after the clients stopped",
    )
    expected = report["abandoned_still_live_at_stop"]
    check(
        "sessions closed properly",
        stop.get("sessions") is not None and stop["sessions"] <= expected,
        f"{stop.get('sessions')} live sessions 3 s after the clients stopped; {expected} abandoned on purpose "
        "within the idle timeout may still live",
    )
    check(
        "no session left after the idle timeout",
        idle.get("sessions") == 0 and idle.get("session_objects") == 0,
        f"{idle.get('sessions')} live sessions, {idle.get('session_objects')} session objects held",
    )
    checks += rest_checks(report)
    kinds_after = report.get("redis_kinds_after")
    if kinds_after is not None:
        left = {k: v for k, v in kinds_after.items() if k.startswith(SESSION_KEY_KINDS)}
        check(
            "no session key left in Redis",
            not left,
            ", ".join(f"{k}: {v}" for k, v in left.items())
            or f"{sum(kinds_after.values())} keys under the prefix, none of a session",
        )
    passed = all(c["ok"] for c in checks)
    failed = [c["name"] for c in checks if not c["ok"]]
    summary = "every series flat, every session closed" if passed else "not met: " + "; ".join(failed)
    return {
        "series": series,
        "checks": checks,
        "passed": passed,
        "summary": summary,
        "ops": ops,
        "ops_per_minute": ops_per_minute(report["samples"], judged_from(report)),
        "errors": errors,
        "tasks_before": before.get("tasks"),
        "tasks_after_idle": idle.get("tasks"),
        "fds_before": before.get("fds"),
        "fds_after_idle": idle.get("fds"),
        "rss_before": before.get("rss_mb"),
        "rss_after_idle": idle.get("rss_mb"),
    }


# -- docs/performance.md -----------------------------------------------------------------------------


def kept_section(text: str | None = None) -> str:
    """The Soak section of docs/performance.md as it is now ("" when there is none): `make bench` rewrites
    the rest of the file and keeps this (a soak is a run of its own)."""
    if text is None:
        text = DOC_PATH.read_text() if DOC_PATH.exists() else ""
    start = text.find("\n" + HEADING + "\n")
    return text[start:].rstrip("\n") + "\n" if start >= 0 else ""


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(runs: dict[str, tuple[dict[str, Any], Path]]) -> list[str]:
    """The Soak section: what a soak does, then one subsection per database that has a run (``runs``: each
    database's report and its JSON), then the hand-written findings."""
    lines = [
        HEADING,
        "",
        "Generated by `make soak` (`bench/soak.py`); `make bench` keeps this section as it is. It shows the latest "
        "run on each database, SQLite (the embedded default) and PostgreSQL + Redis: a run replaces its own "
        "database's subsection and keeps the other's, rendered again from the results JSON that one names.",
        "",
        "```bash",
        "make soak                                      # 30 minutes of traffic, then the checks (about 35 minutes in all, 37 on PostgreSQL + Redis)",
        "make soak SOAK_MINUTES=2                       # a short run (or: .venv/bin/python bench/soak.py --minutes 2)",
        "DATABASE_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379/0 make soak   # PostgreSQL + Redis",
        ".venv/bin/python bench/soak.py --from-json bench/results/soak-<timestamp>.json   # re-render that run's subsection",
        ".venv/bin/python bench/soak.py --from-json A.json --from-json B.json   # both subsections, one run per database",
        "```",
        "",
        "The soak starts the gateway on 127.0.0.1 with the upstream fixture behind it over HTTP and a second one over "
        "stdio (a process the gateway supervises), and runs clients of every transport at once, each opening a "
        "session, using it for 1 to 20 operations and closing it, over and over: Streamable HTTP in the session "
        "era (2025-11-25, 2025-06-18, 2025-03-26: calls, calls with progress, elicitations answered and "
        "elicitations cancelled, resource subscriptions, some sessions with a GET stream; a share of the sessions "
        "left without DELETE, as crashed clients leave them), Streamable HTTP 2026-07-28 (calls, multi-round-trip "
        "elicitation completed or given up, short subscriptions/listen streams), HTTP+SSE, WebSocket, `/rpc`, and "
        "the stdio bridge (a process per session); plus, for the whole run, one WebSocket session, one idle "
        "session holding its GET stream and one subscriptions/listen stream, while the upstream's tool list "
        "changes every few seconds (each run below says how often). Every answer is checked. The gateway runs with "
        "a `GATEWAY_SESSION_IDLE_TIMEOUT` (and `GATEWAY_REQUEST_STATE_TTL`) short enough for abandoned sessions to "
        "expire within the run (each run below gives it), and the production session limits. With `DATABASE_URL` "
        "(PostgreSQL) and `REDIS_URL` set, it runs on a scratch database on that server (dropped at the end) with "
        "a Redis key prefix of its own (`GATEWAY_REDIS_PREFIX`; its keys are deleted at the end); otherwise on "
        "SQLite with in-memory sessions.",
        "",
        "A series is flat when the median of its last 20% of samples exceeds the median of its first 20% after the "
        "warm-up (and after the quiet checkpoint that ends it has been made up for) by no more than its tolerance. "
        "Asyncio tasks, session objects, live sessions and Redis keys follow the traffic rate, which follows the "
        "machine's load: they are judged on their growth beyond the traffic, the residual after a least-squares fit "
        "on what the same sample shows (live sessions and open streams; ops/min over the last idle timeout). "
        "Twice, after the warm-up and at the end, the short-lived clients finish their sessions and wait until the "
        "sessions abandoned on purpose have expired (the idle timeout, on Redis plus their stream logs' 60 s, plus "
        "5 s) and 8 s more while the gateway settles: at rest, with no session of theirs alive, its asyncio tasks, "
        "file descriptors, session objects and live sessions may differ by 3 at most between the two checkpoints, "
        "its RSS by 8 MB, its Redis keys by 10%; after the run and the idle timeout its tasks, descriptors and "
        "Redis keys may not exceed the first checkpoint's by more. The trend per hour is the least-squares slope over the judged samples (given when "
        f"they span 10 minutes or more). {TOLERANCE_NOTE} `mcpgw_asyncio_tasks` and `mcpgw_session_objects` "
        "come from `/metrics` (docs/governance.md).",
    ]
    for db in DATABASES:
        if db in runs:
            lines += ["", *render_run(*runs[db])]
    if FINDINGS_PATH.exists():
        findings = FINDINGS_PATH.read_text().strip().split("\n")
        first = next((i for i, line in enumerate(findings) if line.startswith("#### ")), 0)  # after the file's title
        lines += ["", "### Findings (hand-written: `bench/soak_findings.md`)", "", *findings[first:]]
    return lines


def render_run(report: dict[str, Any], json_path: Path) -> list[str]:
    """One run's subsection: its settings, the verdict on each series, the checks and the traffic."""
    cfg, analysis, m = report["config"], report["analysis"], report["machine"]
    db = (
        "PostgreSQL + Redis (scratch database, key prefix of the run's own)"
        if cfg["db"] == "postgres"
        else "SQLite, in-memory sessions"
    )
    modified = m.get("git_modified") or []
    git = f"`{m.get('git_commit')}`" + (f" plus uncommitted changes to {len(modified)} file(s)" if modified else "")
    minutes = report["traffic_seconds"] / 60
    trigger = cfg["trigger_every_s"]
    lines = [
        f"### This run: {DATABASES[cfg['db']]}",
        "",
        f"Raw results: `{json_path.relative_to(ROOT)}`.",
        "",
        f"- Date: {report['date'].replace('T', ' ')}; {minutes:.1f} min of traffic (warm-up {_fmt(cfg['warmup_s'])} s, "
        f"judged from {judged_from(report):.0f} s, "
        f"a sample every {_fmt(cfg['interval_s'])} s), {report['wall_seconds'] / 60:.1f} min in all; git {git}",
        f"- Gateway: {cfg['server']}, {db}, idle timeout {_fmt(cfg['idle_timeout_s'])} s; clients: "
        + ", ".join(f"{k} ×{v}" for k, v in cfg["workers"].items())
        + f", 3 long-lived; mean pause {_fmt(cfg['think_s'])} s between operations; {cfg['abandon']:.0%} of the "
        "session-era HTTP sessions abandoned; "
        + (f"the upstream's tool list changed every {_fmt(trigger)} s" if trigger else "no tool-list changes")
        + f"; seed {cfg['seed']}",
        f"- Machine: {m['nproc']} CPUs, {m['cpu_model']}; Python {m['python']}",
        f"- Load before: {report['load_before']}",
        f"- Load after: {report['load_after']}",
        "",
        f"**{'Passed' if analysis['passed'] else 'Not passed'}**: {analysis['summary']}.",
        "",
        "| series | first 20% (median) | last 20% (median) | growth | judged against | growth beyond the traffic | tolerance | trend per hour | min – max | verdict |",
        "|---|---:|---:|---:|---|---:|---:|---:|---|---|",
    ]
    for name, s in analysis["series"].items():
        verdict = {"flat": "flat", "growing": "**growing**"}.get(s["verdict"], s["verdict"])
        beyond = s.get("growth_beyond_traffic")
        lines.append(
            f"| {SERIES[name][0]} | {_fmt(s['first'])} | {_fmt(s['last'])} | {s['growth']:+g} | {s.get('against') or '–'} | "
            f"{'–' if beyond is None else f'{beyond:+g}'} | {_fmt(s['tolerance'])} | "
            f"{_fmt(s['slope_per_hour'])} | {_fmt(s['min'])} – {_fmt(s['max'])} | {verdict} |"
        )
    rate = analysis.get("ops_per_minute") or {}
    if rate.get("first") is not None:
        lines += [
            "",
            f"Traffic rate: {_fmt(rate['first'])} ops/min in the first 20% of the judged samples, {_fmt(rate['last'])} "
            "in the last 20% (the clients pace themselves by think time, so the rate follows the machine's load).",
        ]
    lines += ["", "| check | result | detail |", "|---|---|---|"]
    for c in analysis["checks"]:
        result = "not judged" if c.get("judged") is False else ("ok" if c["ok"] else "**not met**")
        lines.append(f"| {c['name']} | {result} | {c['detail']} |")
    lines += [
        "",
        f"Before the traffic: {_fmt(analysis['rss_before'])} MB RSS, {_fmt(analysis['fds_before'])} fds, "
        f"{_fmt(analysis['tasks_before'])} tasks; after it and the idle timeout: {_fmt(analysis['rss_after_idle'])} MB, "
        f"{_fmt(analysis['fds_after_idle'])} fds, {_fmt(analysis['tasks_after_idle'])} tasks.",
        "",
        "| transport | sessions | closed | abandoned | operations | errors | notifications |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, t in report["transports"].items():
        lines.append(
            f"| {kind} | {t['sessions_opened']:,} | {t['sessions_closed']:,} | {t['sessions_abandoned']:,} | "
            f"{t['ops']:,} | {t['errors']:,} | {t['notifications']:,} |"
        )
    logs = report.get("logs") or {}
    if logs:
        lines += [
            "",
            "Logs: "
            + "; ".join(
                f"{name} {log.get('warnings', 0)} warnings, {log.get('errors', 0)} errors, {log.get('tracebacks', 0)} tracebacks"
                for name, log in logs.items()
            )
            + " (first lines of each in the JSON).",
        ]
    total_ops = analysis["ops"]
    lines += [
        "",
        f"{total_ops:,} operations in {minutes:.1f} min ({total_ops / max(report['traffic_seconds'], 1):.0f}/s).",
    ]
    examples = [(k, e) for k, t in report["transports"].items() for e in t["error_examples"]]
    if examples:
        lines += ["", "Errors (first examples by transport):", ""]
        lines += [f"- {k}: `{e[:220]}`" for k, e in examples[:12]]
    if report.get("redis_kinds_after") is not None:
        lines += [
            "",
            "Redis keys under the run's prefix by kind, before the traffic → after it and the idle timeout: "
            + ", ".join(
                f"`{k}` {report['redis_kinds_before'].get(k, 0)} → {report['redis_kinds_after'].get(k, 0)}"
                for k in sorted(set(report["redis_kinds_before"]) | set(report["redis_kinds_after"]))
            )
            + ".",
        ]
    return lines


def load(json_path: Path) -> dict[str, Any]:
    """A soak's results, judged again from its samples by this checkout's rules."""
    report: dict[str, Any] = json.loads(json_path.read_text())
    report["analysis"] = analyse(report)
    return report


def shown_runs(text: str) -> dict[str, tuple[dict[str, Any], Path]]:
    """The runs the Soak section of ``text`` shows, by database, read again from the JSON each names (a section
    written before it held a run per database names one, at its top)."""
    runs: dict[str, tuple[dict[str, Any], Path]] = {}
    for name in RAW_RESULTS.findall(kept_section(text)):
        path = ROOT / name
        if not path.exists():
            print(f"{name}, named in the Soak section, is gone: its run is left out", file=sys.stderr)
            continue
        report = load(path)
        runs.setdefault(report["config"]["db"], (report, path))
    return runs


def write_section(runs: list[tuple[dict[str, Any], Path]], doc: Path = DOC_PATH) -> None:
    """Replace (or append) the Soak section at the end of ``doc``: each of ``runs`` (a report and its JSON)
    takes its database's place; a database none of them ran on keeps the run the section showed."""
    text = doc.read_text() if doc.exists() else "# Performance\n"
    shown = shown_runs(text)
    for report, json_path in runs:
        shown[report["config"]["db"]] = (report, json_path)
    start = text.find("\n" + HEADING + "\n")  # the section is the file's last
    head = text[:start] if start >= 0 else text
    doc.write_text(head.rstrip("\n") + "\n\n" + "\n".join(render(shown)) + "\n")
