"""What the report's modules share: a figure as the tables print it, and a cell by its coordinates."""

# ruff: noqa: RUF001
from __future__ import annotations

from typing import Any


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def find(cells: list[dict[str, Any]], target: str, workload: str, concurrency: int) -> dict[str, Any] | None:
    for c in cells:
        if c["target"] == target and c["workload"] == workload and c["concurrency"] == concurrency:
            return c
    return None
