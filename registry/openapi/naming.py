"""Tool names for OpenAPI operations: the ``operationId`` when it is a valid name, else a sanitised
or derived one, at most 64 characters, unique within the import, and stable across re-imports.

A name maps back to its operation through the tool's ``backend_config.openapi.operation`` ("GET
/users/{id}"), not through the name itself. A name that must be shortened or told apart from another
gets a suffix made from a digest of its operation, so it depends on nothing else in the document; a
name given by an earlier import of the same source is kept while the operation keeps its base name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from registry.validators import TOOL_NAME_RE

MAX_NAME = 64
_INVALID = re.compile(r"[^A-Za-z0-9_.-]+")
_EDGES = "_.-"


@dataclass(frozen=True)
class Operation:
    """What naming needs of an operation."""

    key: str  # "GET /users/{id}"
    operation_id: str | None


def operation_key(method: str, path: str) -> str:
    """The operation's identity in the document, kept in backend_config.openapi.operation."""
    return f"{method.upper()} {path}"


def digest(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def fit(name: str, seed: str) -> str:
    """``name`` within MAX_NAME characters: a longer one is cut and ends with a digest of ``seed``."""
    if len(name) <= MAX_NAME:
        return name
    return f"{name[: MAX_NAME - 9].rstrip(_EDGES)}_{digest(seed)}"


def sanitise(text: str) -> str:
    """Runs of characters a tool name cannot hold become one '_', and the ends are trimmed."""
    return _INVALID.sub("_", text).strip(_EDGES)


def base_name(operation: Operation) -> str:
    """The name an operation gets when nothing else claims it."""
    if operation.operation_id:
        clean = sanitise(operation.operation_id)
        if clean:
            return fit(clean, operation.key)
    method, _, path = operation.key.partition(" ")
    words = [sanitise(segment.strip("{}")) for segment in path.split("/")]
    derived = "_".join([method.lower(), *(word for word in words if word)]) if any(words) else f"{method.lower()}_root"
    return fit(derived, operation.key)


def is_exact(operation: Operation) -> bool:
    """An operationId that is a valid tool name as it stands (operationIds are unique in a document)."""
    oid = operation.operation_id
    return bool(oid) and len(oid or "") <= MAX_NAME and TOOL_NAME_RE.fullmatch(oid or "") is not None


def assign(operations: Iterable[Operation], previous: dict[str, str] | None = None) -> dict[str, str]:
    """operation key -> tool name, unique. ``previous`` (operation key -> name from the last import of
    the same source) wins while it is still the operation's base name or that name with its suffix."""
    ops = list(operations)
    previous = previous or {}
    names: dict[str, str] = {}
    taken: set[str] = set()

    def claim(op: Operation, name: str) -> None:
        names[op.key] = name
        taken.add(name)

    for op in ops:
        kept = previous.get(op.key)
        if kept and kept not in taken and kept in (base_name(op), _suffixed(base_name(op), op.key)):
            claim(op, kept)
    for op in sorted(ops, key=lambda op: not is_exact(op)):  # exact operationIds first, then document order
        if op.key in names:
            continue
        name = base_name(op)
        if name in taken:
            name = _suffixed(name, op.key)
        n = 1
        while name in taken:  # only when two digests collide
            n += 1
            name = fit(f"{_suffixed(base_name(op), op.key)}_{n}", f"{op.key}#{n}")
        claim(op, name)
    return names


def _suffixed(name: str, key: str) -> str:
    tag = digest(key, 6)
    return f"{name[: MAX_NAME - 7].rstrip(_EDGES)}_{tag}"
