"""``$ref`` inside one OpenAPI document: following references to parameters, bodies, responses and
security schemes, and turning OpenAPI schemas into self-contained JSON Schema 2020-12 for a tool.

Schemas are inlined, so a tool's schema reads without the document. A reference met again while it
is being expanded (a cycle, such as a tree node whose children are nodes) becomes
``{"$ref": "#/$defs/<Name>"}`` with the definition in the tool schema's root ``$defs``, which every
2020-12 validator follows; the result is finite. When inlining would grow too large or too deep (many
references to big schemas), the caller asks again with ``inline=False``: every reference then becomes
a ``$defs`` entry, built once, so the size stays within the document's own. The document's version
dialect is translated on the way (3.0 ``nullable``, boolean ``exclusiveMinimum``, ``example``).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from registry.exceptions import InvalidInput
from registry.openapi.document import MAX_REF_CHAIN, pointer, resolve_pointer, split_pointer

Path = tuple[str | int, ...]

MAX_INLINE_DEPTH = 32  # references expanded inside one another before falling back to $defs
MAX_INLINE_NODES = 5000  # schema objects in one tool's inlined schemas before falling back to $defs
MAX_SCHEMA_DEPTH = 100  # nested schemas, references followed

SCHEMA_MAPS = ("properties", "patternProperties", "dependentSchemas")
SCHEMA_ONE = (
    "additionalProperties",
    "items",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
    "contains",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contentSchema",
)
SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
# OpenAPI's own keywords, and identifiers that mean nothing once the schema leaves the document.
DROPPED = {
    "discriminator",
    "xml",
    "externalDocs",
    "example",
    "nullable",
    "$schema",
    "$id",
    "$anchor",
    "$dynamicAnchor",
    "$defs",
    "definitions",
}
ANNOTATIONS = {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "$comment"}
_DEF_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class Fallback(Exception):  # a signal to the caller, not an error
    """Inlining this tool's schemas grew too large or too deep: build them again with inline=False."""


class Resolver:
    """Reads one document's references; every reference was checked to be local by the document scan."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def deref(self, node: Any, path: Path) -> tuple[Any, Path]:
        """Follow a chain of Reference objects to the object it names, with the object's own path."""
        chain: list[str] = []
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if ref in chain:
                raise InvalidInput(f"{pointer(path)}: the references {' -> '.join([*chain, ref])} form a loop.")
            chain.append(ref)
            if len(chain) > MAX_REF_CHAIN:
                raise InvalidInput(
                    f"{pointer(path)}: more than {MAX_REF_CHAIN} references in a chain ({chain[0]} -> ... -> {ref}); "
                    "point at the object directly."
                )
            try:
                node = resolve_pointer(self.data, ref)
            except LookupError as exc:
                raise InvalidInput(f"{pointer(path)}: {ref!r} points to nothing in the document ({exc}).") from None
            path = tuple(split_pointer(ref))
        return node, path

    def flag(self, node: Any, key: str) -> bool:
        """Whether a schema (through its references, siblings first) says ``key: true``."""
        for _ in range(MAX_REF_CHAIN + 1):
            if not isinstance(node, dict):
                return False
            if node.get(key) is True:
                return True
            if not isinstance(node.get("$ref"), str):
                return False
            try:
                node = resolve_pointer(self.data, node["$ref"])
            except LookupError:
                return False
        return False


class SchemaBuilder:
    """Builds the schemas of one tool (its input or its output), sharing one ``$defs``."""

    def __init__(self, resolver: Resolver, *, dialect: str, mode: str, inline: bool = True) -> None:
        self.resolver = resolver
        self.dialect = dialect  # "3.0" or "3.1"
        self.mode = mode  # "request" drops readOnly properties, "response" writeOnly ones
        self.inline = inline
        self.defs: dict[str, Any] = {}
        self._names: dict[str, str] = {}  # reference -> its $defs name
        self._stack: list[str] = []  # references being inlined, outermost first
        self._nodes = 0
        self._depth = 0

    def schema(self, node: Any, path: Path) -> Any:
        """The JSON Schema 2020-12 equivalent of the OpenAPI schema ``node`` found at ``path``."""
        if isinstance(node, bool):  # true/false schemas (3.1, and additionalProperties in 3.0)
            return node
        if not isinstance(node, dict):
            raise InvalidInput(f"{pointer(path)}: a schema must be an object, not {type(node).__name__}.")
        self._nodes += 1
        if self.inline and self._nodes > MAX_INLINE_NODES:
            raise Fallback
        self._depth += 1
        try:
            if self._depth > MAX_SCHEMA_DEPTH:
                raise InvalidInput(
                    f"{pointer(path)}: schemas nest more than {MAX_SCHEMA_DEPTH} levels deep (references followed)."
                )
            if isinstance(node.get("$ref"), str):
                return self._reference(node, path)
            return self._object(node, path)
        finally:
            self._depth -= 1

    def root(self, node: Any, path: Path) -> Any:
        """Like ``schema``, but references at the top are always expanded (the caller looks inside, for
        a body's properties or a response's type), and count as being expanded (so a cycle back to them
        becomes a ``$defs`` reference right away)."""
        refs: list[str] = []
        while isinstance(node, dict) and set(node) == {"$ref"} and isinstance(node["$ref"], str):
            self._check_chain(node["$ref"], path)
            refs.append(node["$ref"])
            node, path = resolve_pointer(self.resolver.data, node["$ref"]), tuple(split_pointer(node["$ref"]))
        self._stack.extend(refs)
        try:
            return self.schema(node, path)
        finally:
            del self._stack[len(self._stack) - len(refs) :]

    def finish(self, root: dict[str, Any]) -> dict[str, Any]:
        """``root`` with the definitions its references need."""
        return {**root, "$defs": dict(self.defs)} if self.defs else root

    def _object(self, node: dict[str, Any], path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key.startswith("x-") or key in DROPPED:
                continue
            where = (*path, key)
            if key in SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {name: self.schema(item, (*where, name)) for name, item in value.items()}
            elif key == "items" and isinstance(value, list):  # draft-4 tuple form, as 2020-12 spells it
                out["prefixItems"] = [self.schema(item, (*where, i)) for i, item in enumerate(value)]
            elif key in SCHEMA_ONE and isinstance(value, dict | bool):
                out[key] = self.schema(value, where)
            elif key in SCHEMA_LISTS and isinstance(value, list):
                out[key] = [self.schema(item, (*where, i)) for i, item in enumerate(value)]
            else:
                out[key] = copy.deepcopy(value)
        self._translate(node, out)
        if isinstance(node.get("properties"), dict):
            self._drop_hidden(node["properties"], out)
        return out

    def _translate(self, node: dict[str, Any], out: dict[str, Any]) -> None:
        if "example" in node and "examples" not in out:
            out["examples"] = [copy.deepcopy(node["example"])]
        if node.get("nullable") is True:
            kind = out.get("type")
            if isinstance(kind, str):
                out["type"] = [kind, "null"]
            elif isinstance(kind, list) and "null" not in kind:
                out["type"] = [*kind, "null"]
            if isinstance(out.get("enum"), list) and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            # 3.0: a flag on minimum/maximum; 2020-12: the bound itself
            if isinstance(out.get(exclusive), bool) and out.pop(exclusive) and bound in out:
                out[exclusive] = out.pop(bound)

    def _drop_hidden(self, source: dict[str, Any], out: dict[str, Any]) -> None:
        """A request carries no readOnly property, a response no writeOnly one (OpenAPI Schema object)."""
        hidden_key = "readOnly" if self.mode == "request" else "writeOnly"
        hidden = {name for name, item in source.items() if self.resolver.flag(item, hidden_key)}
        if not hidden:
            return
        out["properties"] = {name: item for name, item in out["properties"].items() if name not in hidden}
        if isinstance(out.get("required"), list):
            out["required"] = [name for name in out["required"] if name not in hidden]
            if not out["required"]:
                del out["required"]

    def _reference(self, node: dict[str, Any], path: Path) -> Any:
        ref = node["$ref"]
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        if self.dialect == "3.0":  # 3.0 ignores a reference's siblings; their annotations still help a reader
            siblings = {key: value for key, value in siblings.items() if key in ANNOTATIONS}
        if ref in self._names or ref in self._stack or not self.inline:
            target: Any = {"$ref": f"#/$defs/{self._define(ref, path)}"}
        else:
            if len(self._stack) >= MAX_INLINE_DEPTH:
                raise Fallback
            self._check_chain(ref, path)
            self._stack.append(ref)
            try:
                target = self.schema(resolve_pointer(self.resolver.data, ref), tuple(split_pointer(ref)))
            finally:
                self._stack.pop()
        if not siblings:
            return target
        extra = self._object(siblings, path)
        if isinstance(target, dict) and (set(extra) & set(target)) <= ANNOTATIONS:
            return {**target, **extra}  # 2020-12 applies $ref beside other keywords, so merging keeps the meaning
        return {"allOf": [target, extra]}

    def _check_chain(self, ref: str, path: Path) -> None:
        chain: list[str] = []
        node: Any = {"$ref": ref}
        while isinstance(node, dict) and set(node) == {"$ref"} and isinstance(node["$ref"], str):
            chain.append(node["$ref"])
            if len(chain) > MAX_REF_CHAIN:
                raise InvalidInput(
                    f"{pointer(path)}: more than {MAX_REF_CHAIN} references in a chain "
                    f"({chain[0]} -> ... -> {chain[-1]}); point at the schema directly."
                )
            if chain.count(chain[-1]) > 1:
                raise InvalidInput(
                    f"{pointer(path)}: the references {' -> '.join(chain)} form a loop with no schema in it."
                )
            node = resolve_pointer(self.resolver.data, node["$ref"])

    def _define(self, ref: str, path: Path) -> str:
        """The $defs name of a referenced schema, building its definition the first time."""
        if ref in self._names:
            return self._names[ref]
        self._check_chain(ref, path)
        tokens = split_pointer(ref)
        base = _DEF_NAME.sub("_", tokens[-1] if tokens else "root").strip("_") or "schema"
        name, n = base, 1
        taken = set(self._names.values())
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        self._names[ref] = name
        self.defs[name] = {}
        outer, self._stack = self._stack, [ref]
        try:
            self.defs[name] = self.schema(resolve_pointer(self.resolver.data, ref), tuple(tokens))
        finally:
            self._stack = outer
        return name
