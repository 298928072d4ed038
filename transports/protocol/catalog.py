"""The in-process catalog snapshot: what the MCP methods read instead of the database.

A snapshot is immutable and built once per catalog version from the rows a ``CatalogSource`` reads
(the database's, through ``transports.catalog_source``; no Django here). ``CatalogCache`` hands out
the current one and rebuilds it when the version moves: right away when invalidated (a commit in
this process), and when the source's watcher sees another process's change (the channel-layer group,
a slow version poll). Steady-state requests make no query.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import logging
import operator
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import orjson

from transports.protocol.json_schema import compile_schema

logger = logging.getLogger(__name__)

RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class ToolEntry:
    name: str
    wire: dict[str, Any]  # the Tool object as tools/list returns it
    integration_type: str
    gateway: str | None
    upstream_name: str
    timeout: float | None
    backend_config: dict[str, Any]
    # A REST tool's decrypted secrets (docs/tool-backends.md); {} for every other tool.
    credentials: dict[str, Any] = field(default_factory=dict)
    # Wrapped tools only (no upstream checks for them): the compiled input and output schemas.
    input_validator: Any = None
    output_validator: Any = None
    # Other providers of this tool in its gateway's redundancy group, best priority first:
    # (gateway, upstream name) pairs a call may fail over to (docs/federation.md §4). () for most tools.
    alternates: tuple[tuple[str, str], ...] = ()
    # The tool's own rate_limit, parsed (requests, window seconds); None: the setting's (transports/protocol/limits.py).
    rate_limit: tuple[int, float] | None = None


@dataclass(frozen=True, slots=True)
class ResourceEntry:
    uri: str
    wire: dict[str, Any]
    mime_type: str
    text: str | None
    blob: bytes | None
    gateway: str | None
    upstream_uri: str


@dataclass(frozen=True, slots=True)
class TemplateEntry:
    uri_template: str
    wire: dict[str, Any]
    gateway: str | None
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class PromptEntry:
    name: str
    wire: dict[str, Any]
    arguments: list[dict[str, Any]]
    template: str
    gateway: str | None
    upstream_name: str


def _sorted_by(entries: list[Any], key: str) -> tuple[Any, ...]:
    return tuple(sorted(entries, key=lambda e: getattr(e, key)))


@dataclass(frozen=True)
class View:
    """What one endpoint serves: the whole catalog (/mcp) or one virtual server, in name order."""

    name: str | None
    title: str
    tools: tuple[ToolEntry, ...]
    resources: tuple[ResourceEntry, ...]
    templates: tuple[TemplateEntry, ...]
    prompts: tuple[PromptEntry, ...]
    # A virtual server's own rate_limit, parsed (requests, window seconds); None: the setting's.
    rate_limit: tuple[int, float] | None = None
    tool_by_name: MappingProxyType[str, ToolEntry] = field(init=False)
    resource_by_uri: MappingProxyType[str, ResourceEntry] = field(init=False)
    prompt_by_name: MappingProxyType[str, PromptEntry] = field(init=False)
    _tool_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tool_by_name", MappingProxyType({t.name: t for t in self.tools}))
        object.__setattr__(self, "resource_by_uri", MappingProxyType({r.uri: r for r in self.resources}))
        object.__setattr__(self, "prompt_by_name", MappingProxyType({p.name: p for p in self.prompts}))
        object.__setattr__(self, "_tool_names", tuple(t.name for t in self.tools))

    def template_for(self, uri: str) -> TemplateEntry | None:
        """The first template (in order) whose pattern matches a concrete URI."""
        for template in self.templates:
            if template.pattern.fullmatch(uri):
                return template
        return None


@dataclass(frozen=True)
class Snapshot:
    version: int
    catalog: View
    servers: MappingProxyType[str, View]
    upstreams: MappingProxyType[str, dict[str, Any]]

    def view(self, server: str | None) -> View | None:
        return self.catalog if server is None else self.servers.get(server)


# -- building ---------------------------------------------------------------------------------

_EXPRESSION = re.compile(r"\{([+#./;?&]?)([^}]*)\}")


def template_pattern(template: str) -> re.Pattern[str]:
    """A regular expression matching the URIs an RFC 6570 template can expand to (approximately:
    simple and path expressions take one segment, reserved ones anything, query parts optional)."""
    out, pos = [], 0
    for match in _EXPRESSION.finditer(template):
        out.append(re.escape(template[pos : match.start()]))
        operator = match.group(1)
        if operator in ("+", "#"):
            out.append(".*")
        elif operator in ("?", "&"):
            out.append(r"(?:[?&][^#]*)?")
        elif operator in ("/", "."):
            out.append(r"(?:[/.][^?#]*)?")
        else:
            out.append(r"[^/?#]*")
        pos = match.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


def _clean(wire: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in wire.items() if v not in (None, "", {}, [])}


def _validators(row: dict[str, Any]) -> dict[str, Any]:
    """Compiled schemas for a wrapped tool (an upstream MCP server checks its own tools' input)."""
    if row["integration_type"] == "mcp":
        return {}
    what = f"tool {row['name']!r}"
    return {
        "input_validator": compile_schema(row["input_schema"], what=what),
        "output_validator": compile_schema(row["output_schema"], what=what) if row["output_schema"] else None,
    }


def _schema_key(schema: Any) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)


def redundant_providers(
    rows: dict[str, Any],
) -> tuple[dict[int, tuple[tuple[str, str], ...]], dict[int, int]]:
    """Upstream tools that several gateways of one redundancy group offer (same upstream name, same
    input schema): the alternates of the one entry that serves each, and, for every other provider's
    row id, the id of that entry. One pass over the tools; only grouped gateways' tools cost more."""
    groups = {g["name"]: (g["redundancy_group"], g["priority"]) for g in rows["gateways"] if g.get("redundancy_group")}
    if not groups:
        return {}, {}
    providers: dict[tuple[str, str, bytes], list[dict[str, Any]]] = {}
    for row in rows["tools"]:
        group = groups.get(row["gateway"]) if row["integration_type"] == "mcp" else None
        if group is not None:
            key = (group[0], row["upstream_name"], _schema_key(row["input_schema"]))
            providers.setdefault(key, []).append(row)
    alternates: dict[int, tuple[tuple[str, str], ...]] = {}
    redirect: dict[int, int] = {}
    for members in providers.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda r: (groups[r["gateway"]][1], r["gateway"]))
        # The entry clients know by the upstream's own name keeps serving; else the best priority's.
        primary = next((r for r in members if r["name"] == r["upstream_name"]), members[0])
        alternates[primary["id"]] = tuple((r["gateway"], r["upstream_name"]) for r in members if r is not primary)
        redirect.update((r["id"], primary["id"]) for r in members if r is not primary)
    return alternates, redirect


def build_snapshot(rows: dict[str, Any], *, servable: Callable[[ToolEntry], bool] | None = None) -> Snapshot:
    """Turn ``catalog_rows`` into immutable views (without the tools ``servable`` refuses; a tool that
    gateways of one redundancy group share becomes one entry with ``alternates``)."""
    alternates, redirect = redundant_providers(rows)
    tools = {
        row["id"]: ToolEntry(
            name=row["name"],
            wire=_clean(
                {
                    "name": row["name"],
                    "title": row["title"],
                    "description": row["description"],
                    "inputSchema": row["input_schema"],
                    "outputSchema": row["output_schema"],
                    "annotations": row["annotations"],
                }
            )
            | {"inputSchema": row["input_schema"]},
            integration_type=row["integration_type"],
            gateway=row["gateway"],
            upstream_name=row["upstream_name"],
            timeout=row["timeout"],
            backend_config=row["backend_config"],
            credentials=row.get("credentials") or {},
            alternates=alternates.get(row["id"], ()),
            rate_limit=row.get("rate_limit"),
            **_validators(row),
        )
        for row in rows["tools"]
        if row["id"] not in redirect
    }
    if servable is not None:
        tools = {key: tool for key, tool in tools.items() if servable(tool)}
    resources = {
        row["id"]: ResourceEntry(
            uri=row["uri"],
            wire=_clean(
                {
                    "uri": row["uri"],
                    "name": row["name"],
                    "title": row["title"],
                    "description": row["description"],
                    "mimeType": row["mime_type"],
                    "annotations": row["annotations"],
                }
            ),
            mime_type=row["mime_type"],
            text=row["text"],
            blob=row["blob"],
            gateway=row["gateway"],
            upstream_uri=row["upstream_uri"],
        )
        for row in rows["resources"]
    }
    templates = {
        row["id"]: TemplateEntry(
            uri_template=row["uri_template"],
            wire=_clean(
                {
                    "uriTemplate": row["uri_template"],
                    "name": row["name"],
                    "title": row["title"],
                    "description": row["description"],
                    "mimeType": row["mime_type"],
                    "annotations": row["annotations"],
                }
            ),
            gateway=row["gateway"],
            pattern=template_pattern(row["uri_template"]),
        )
        for row in rows["resource_templates"]
    }
    prompts = {
        row["id"]: PromptEntry(
            name=row["name"],
            wire=_clean(
                {
                    "name": row["name"],
                    "title": row["title"],
                    "description": row["description"],
                    "arguments": row["arguments"],
                }
            ),
            arguments=row["arguments"],
            template=row["template"],
            gateway=row["gateway"],
            upstream_name=row["upstream_name"],
        )
        for row in rows["prompts"]
    }

    def view(name: str | None, title: str, member_ids: dict[str, list[int]] | None, rate_limit: Any = None) -> View:
        def pick(table: dict[int, Any], key: str) -> list[Any]:
            if member_ids is None:
                return list(table.values())
            whole = set(member_ids.get("gateways", ()))  # servers composed of whole gateways follow them
            chosen = {i: table[i] for i in member_ids[key] if i in table}
            chosen.update({i: entry for i, entry in table.items() if entry.gateway in whole})
            return list(chosen.values())

        def pick_tools() -> list[ToolEntry]:
            if member_ids is None or not redirect:
                return pick(tools, "tools")
            # A server that lists any provider of a shared tool (or a whole gateway of one) serves its entry.
            whole: set[str] = set(member_ids.get("gateways", ()))  # type: ignore[arg-type]
            chosen = {j: tools[j] for j in (redirect.get(i, i) for i in member_ids["tools"]) if j in tools}
            chosen.update(
                (i, entry)
                for i, entry in tools.items()
                if entry.gateway in whole or (entry.alternates and any(g in whole for g, _ in entry.alternates))
            )
            return list(chosen.values())

        return View(
            name=name,
            title=title,
            tools=_sorted_by(pick_tools(), "name"),
            resources=_sorted_by(pick(resources, "resources"), "uri"),
            templates=_sorted_by(pick(templates, "resource_templates"), "uri_template"),
            prompts=_sorted_by(pick(prompts, "prompts"), "name"),
            rate_limit=tuple(rate_limit) if rate_limit else None,
        )

    servers = {
        row["name"]: view(row["name"], row["title"] or row["name"], row, row.get("rate_limit"))
        for row in rows["servers"]
    }
    return Snapshot(
        version=rows["version"],
        catalog=view(None, "MCP Gateway", None),
        servers=MappingProxyType(servers),
        upstreams=MappingProxyType({row["name"]: row for row in rows["gateways"]}),
    )


# -- pagination -------------------------------------------------------------------------------


def encode_cursor(last_key: str) -> str:
    return base64.urlsafe_b64encode(b"k1:" + last_key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The key a cursor resumes after; ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not a cursor from this server") from exc
    if not raw.startswith(b"k1:"):
        raise ValueError("not a cursor from this server")
    return raw[3:].decode("utf-8", errors="strict")


def page(entries: tuple[Any, ...], key: str, cursor: str | None, size: int) -> tuple[list[Any], str | None]:
    """One page of entries sorted by ``key`` after the cursor's key; and the next cursor, if any.
    Cursors name the last key seen, so they stay valid when the catalog changes between pages."""
    start = 0
    if cursor is not None:
        last = decode_cursor(cursor)
        start = bisect.bisect_right(entries, last, key=operator.attrgetter(key))  # O(log n), no key list
    chunk = list(entries[start : start + size])
    more = start + size < len(entries)
    return chunk, (encode_cursor(getattr(chunk[-1], key)) if more and chunk else None)


# -- the per-process cache --------------------------------------------------------------------


class CatalogSource(Protocol):
    """Where the catalog comes from (the database, in ``transports.catalog_source``)."""

    async def rows(self) -> dict[str, Any]:
        """The catalog's rows (the shape of ``registry.selectors.catalog_rows``)."""

    async def watch(self, version: Callable[[], int], invalidate: Callable[[], None]) -> None:
        """Run until cancelled: call ``invalidate`` when the catalog's version differs from ``version()``."""


EMPTY_ROWS: dict[str, Any] = {
    "version": 0,
    "tools": [],
    "resources": [],
    "resource_templates": [],
    "prompts": [],
    "servers": [],
    "gateways": [],
}


class StaticSource:
    """A catalog that never changes by itself (tests, and a core with no database)."""

    def __init__(self, rows: dict[str, Any] | None = None) -> None:
        self._rows = rows or EMPTY_ROWS

    async def rows(self) -> dict[str, Any]:
        return self._rows

    async def watch(self, version: Callable[[], int], invalidate: Callable[[], None]) -> None:
        await asyncio.Event().wait()


class CatalogUnavailable(Exception):
    """The catalog database could not be read and no earlier snapshot exists."""


class CatalogCache:
    """The current snapshot of this process, rebuilt when the catalog version changes."""

    def __init__(self, source: CatalogSource | None = None) -> None:
        self.source: CatalogSource = source if source is not None else StaticSource()
        # Which tools can be served (a backend is enabled for their kind); the others are left out.
        self.servable: Callable[[ToolEntry], bool] | None = None
        self._snapshot: Snapshot | None = None
        self._wanted = 1  # bumped by every invalidation
        self._built = 0  # the `_wanted` value the current snapshot was built for
        self._retry_at = 0.0
        self._lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rebuild: asyncio.Task[Snapshot] | None = None
        # Called with (previous, current) after each rebuild: list_changed notifications hang here.
        self.on_change: Callable[[Snapshot, Snapshot], None] | None = None

    def invalidate(self) -> None:
        """Mark the snapshot stale and rebuild it soon (safe to call from any thread)."""
        self._wanted += 1
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._kick)

    def _kick(self) -> None:
        if self._snapshot is not None and (self._rebuild is None or self._rebuild.done()):
            self._rebuild = asyncio.ensure_future(self.get())

    async def get(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is not None and (self._built == self._wanted or time.monotonic() < self._retry_at):
            return snapshot
        async with self._lock:
            self._loop = asyncio.get_running_loop()
            # Build until the snapshot is as new as the last invalidation (one may arrive mid-build).
            while self._snapshot is None or self._built != self._wanted:
                if self._snapshot is not None and time.monotonic() < self._retry_at:
                    break
                target = self._wanted
                try:
                    rows = await self.source.rows()
                except Exception as exc:
                    # Keep serving the last good snapshot while the database is unreachable; retry soon.
                    self._retry_at = time.monotonic() + RETRY_SECONDS
                    if self._snapshot is None:
                        logger.error("cannot load the catalog: %s", exc)
                        raise CatalogUnavailable("The catalog cannot be loaded right now; try again shortly.") from exc
                    logger.warning("catalog rebuild failed, serving v%s: %s", self._snapshot.version, exc)
                    break
                previous, self._snapshot = self._snapshot, build_snapshot(rows, servable=self.servable)
                self._built = target
                logger.debug("catalog snapshot v%s built", self._snapshot.version)
                if self.on_change is not None and previous is not None:
                    try:
                        self.on_change(previous, self._snapshot)
                    except Exception:
                        logger.exception("catalog change callback failed")
            if self._listener is None or self._listener.done():
                self._listener = asyncio.get_running_loop().create_task(self._listen())
            return self._snapshot

    async def _listen(self) -> None:
        """Follow the source's change notices; never let the watcher die on a broken source."""
        while True:
            try:
                await self.source.watch(lambda: self._snapshot.version if self._snapshot else -1, self.invalidate)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("catalog watcher error; retrying", exc_info=True)
                await asyncio.sleep(RETRY_SECONDS)
