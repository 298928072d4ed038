"""Shared by the sync + drift tests: the lists of a fake upstream."""

from __future__ import annotations

from typing import Any


def tool(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "inputSchema": {"type": "object", "properties": {}}, **extra}
