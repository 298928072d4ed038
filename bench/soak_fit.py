"""The arithmetic of the soak's verdicts (bench/soak_report.py): window medians, trends, traffic rates and
the residual of a series after what the traffic of the same sample explains."""

from __future__ import annotations

import statistics
from typing import Any


def window_median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


MIN_SLOPE_SPAN = 600.0  # seconds of judged samples below which a per-hour trend is extrapolated noise


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3 or points[-1][0] - points[0][0] < MIN_SLOPE_SPAN:
        return None
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return round(sum((t - mean_t) * (v - mean_v) for t, v in points) / var * 3600, 2)


def traffic_rates(samples: list[dict[str, Any]], window: float) -> dict[float, float]:
    """Operations per minute over the ``window`` seconds up to each traffic sample, by its time."""
    run = [s for s in samples if s.get("phase") == "run" and s.get("ops") is not None]
    out: dict[float, float] = {}
    j = 0
    for s in run:
        while run[j]["t"] < s["t"] - window:
            j += 1
        span = s["t"] - run[j]["t"]
        if span >= 0.5 * window:
            out[s["t"]] = round((s["ops"] - run[j]["ops"]) * 60 / span, 1)
    return out


def _solve(a: list[list[float]], b: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None when the system is singular."""
    n = len(b)
    m = [[*row, rhs] for row, rhs in zip(a, b, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-9:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col], strict=True)]
    return [m[i][n] / m[i][i] for i in range(n)]


def residuals(values: list[float], drivers: list[list[float]]) -> tuple[list[float], list[float]]:
    """``values`` less their least-squares fit on ``drivers`` (one list per sample) with an intercept, and the
    fitted coefficients. A driver that does not vary explains nothing and is left out (coefficient 0)."""
    n, k = len(values), len(drivers[0]) if drivers else 0
    means = [sum(d[i] for d in drivers) / n for i in range(k)]
    used = [i for i in range(k) if any(abs(d[i] - means[i]) > 1e-9 for d in drivers)]
    coef = [0.0] * k
    while used:
        x = [[d[i] - means[i] for i in used] for d in drivers]
        y_mean = sum(values) / n
        a = [[sum(r[p] * r[q] for r in x) for q in range(len(used))] for p in range(len(used))]
        b = [sum(r[p] * (v - y_mean) for r, v in zip(x, values, strict=True)) for p in range(len(used))]
        solved = _solve(a, b)
        if solved is not None:
            for i, c in zip(used, solved, strict=True):
                coef[i] = c
            break
        used.pop()  # collinear drivers: the last one adds nothing the others do not
    fitted = [sum(coef[i] * (d[i] - means[i]) for i in range(k)) for d in drivers]
    return [v - f for v, f in zip(values, fitted, strict=True)], coef


def ops_per_minute(samples: list[dict[str, Any]], warmup: float) -> dict[str, float | None]:
    """The traffic rate in the first and last 20% of the judged samples (the windows the series compare)."""
    judged = [s for s in samples if s.get("phase") == "run" and s["t"] >= warmup and s.get("ops") is not None]
    if len(judged) < 5:
        return {"first": None, "last": None}
    k = max(2, round(0.2 * len(judged)))

    def rate(window: list[dict[str, Any]]) -> float | None:
        span = window[-1]["t"] - window[0]["t"]
        return round((window[-1]["ops"] - window[0]["ops"]) * 60 / span, 1) if span > 0 else None

    return {"first": rate(judged[:k]), "last": rate(judged[-k:])}
