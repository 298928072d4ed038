"""The definition rules of rest tools (docs/tool-backends.md)."""

from __future__ import annotations

from typing import Any


def clean(tool: Any) -> None:  # a registry.models.Tool (a layer above this one)
    """Check and normalise ``tool.backend_config``; ValidationError({"backend_config": ...}) when wrong."""
