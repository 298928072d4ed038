"""The Python-function backend: a tools/call calls an allowed Python function (docs/tool-backends.md
"Python function").

Only functions matched by the allow-list (``GATEWAY_FUNCTION_TOOLS``: exact dotted paths, or
``package.module.*`` for the public functions of a module) are imported, advertised and called. The
arguments, already checked against the tool's JSON schema by the gateway, are validated and converted
by pydantic to the function's type hints (enums, models, lists, optional values...) before the call.

Async functions are awaited in the event loop; sync functions run in a worker thread. Both are
bounded by the tool's timeout, but a thread cannot be killed: a sync function that overruns gets its
caller an ``isError`` answer on time while it keeps running (and holding a worker thread) until it
returns by itself. Functions that may run long should be async, or bound their own work.

A function may take a parameter annotated ``CallContext`` (any name): it gets the call's context, to
report progress or logs (``await context.progress(...)``, from async functions), and the parameter is
not part of the tool's arguments.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import PydanticSerializationError, to_jsonable_python

from transports.protocol import jsonrpc
from transports.protocol.backends.base import CallContext, ToolBackend
from transports.protocol.backends.results import error_result, excerpt, json_result, text_result
from transports.protocol.catalog import ToolEntry
from transports.protocol.jsonrpc import JsonRpcError

logger = logging.getLogger(__name__)


def allowed_by(path: str, patterns: Sequence[str]) -> bool:
    """``path`` is listed exactly, or its module is listed as ``module.*`` and the function is public."""
    module, _, name = path.rpartition(".")
    return any(
        pattern == path or (pattern.endswith(".*") and pattern[:-2] == module and not name.startswith("_"))
        for pattern in patterns
    )


@dataclass(frozen=True)
class Target:
    """An imported function and what calling it takes: the pydantic model of its arguments (fields
    aliased to the parameter names), which parameters are positional-only, and where the context goes."""

    function: Callable[..., Any]
    arguments: type[BaseModel]
    positional: frozenset[str]
    context_parameter: str | None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)


def load_target(path: str) -> Target:
    """Import the function at ``path`` and build the model of its arguments from its type hints."""
    module_name, _, name = path.rpartition(".")
    function = getattr(importlib.import_module(module_name), name)
    if isinstance(function, type) or not callable(function):
        raise TypeError(f"{path!r} is not a function")
    fields: dict[str, Any] = {}
    positional: set[str] = set()
    context_parameter = None
    extra: Literal["allow", "forbid"] = "forbid"
    for index, parameter in enumerate(inspect.signature(function, eval_str=True).parameters.values()):
        annotation = Any if parameter.annotation is inspect.Parameter.empty else parameter.annotation
        if annotation is CallContext:
            context_parameter = parameter.name
        elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
            extra = "allow"
        elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
            if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
                positional.add(parameter.name)
            default = ... if parameter.default is inspect.Parameter.empty else parameter.default
            # Field names of our own, the parameter's as alias: no clash with BaseModel's attributes.
            fields[f"p{index}"] = (annotation, Field(default, alias=parameter.name))
    model = create_model(f"{name}_arguments", __config__=ConfigDict(extra=extra), **fields)
    return Target(function, model, frozenset(positional), context_parameter)


def shape(result: Any, tool: ToolEntry) -> dict[str, Any]:
    """The CallToolResult of a function's return value."""
    if result is None:
        return {"content": []}
    if isinstance(result, str):
        return text_result(result)
    try:
        value = result.model_dump(mode="json") if isinstance(result, BaseModel) else to_jsonable_python(result)
        return json_result(value, tool)
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        return error_result(f"The function returned a {type(result).__name__} that cannot be sent as JSON: {exc}")


class FunctionBackend(ToolBackend):
    """Tools of integration type ``function``; only functions matched by ``allowed`` run."""

    def __init__(self, *, allowed: Sequence[str] = ()) -> None:
        self.allowed = tuple(allowed)
        self._targets: dict[str, Target] = {}  # imported once per dotted path

    def allows(self, path: Any) -> TypeGuard[str]:
        return isinstance(path, str) and allowed_by(path, self.allowed)

    def target(self, path: str) -> Target:
        target = self._targets.get(path)
        if target is None:
            target = self._targets[path] = load_target(path)
        return target

    def available(self, tool: ToolEntry) -> bool:
        path = tool.backend_config.get("function")
        if not self.allows(path):
            return False
        try:
            self.target(path)
        except Exception:  # a module that fails to import must not break the catalog: log, leave the tool out
            logger.warning("Function tool %r is not served: %r cannot be loaded", tool.name, path, exc_info=True)
            return False
        return True

    async def call(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        tool = context.tool
        path = tool.backend_config.get("function")
        if not self.allows(path):
            raise JsonRpcError(
                jsonrpc.SERVER_ERROR,
                f"Tool {tool.name!r} cannot be called: the function {path!r} is not allowed by GATEWAY_FUNCTION_TOOLS.",
            )
        try:
            target = self.target(path)
        except Exception as exc:
            logger.warning("Function tool %r: %r cannot be loaded", tool.name, path, exc_info=True)
            return error_result(f"The function {path!r} cannot be loaded: {type(exc).__name__}: {exc}")
        try:
            validated = target.arguments.model_validate(arguments)
        except ValidationError as exc:
            return error_result(f"Invalid arguments for tool {tool.name!r}: {_describe(exc)}")
        args, kwargs = _call_arguments(target, validated, context)
        deadline = asyncio.timeout(context.timeout)
        try:
            async with deadline:
                if target.is_async:
                    result = await target.function(*args, **kwargs)
                else:
                    # A worker thread: the event loop keeps serving while the function runs.
                    result = await asyncio.to_thread(target.function, *args, **kwargs)
                if inspect.isawaitable(result):  # a sync callable that hands back a coroutine
                    result = await result
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                still = "" if target.is_async else " (it keeps running in its worker thread until it returns)"
                return error_result(
                    f"The function {path!r} did not finish within the tool's timeout ({context.timeout:g} s){still}."
                )
            logger.warning("Function tool %r raised", tool.name, exc_info=True)
            return error_result(f"The function {path!r} raised {type(exc).__name__}: {excerpt(str(exc))}")
        return shape(result, tool)


def _call_arguments(target: Target, validated: BaseModel, context: CallContext) -> tuple[list[Any], dict[str, Any]]:
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for field_name, info in type(validated).model_fields.items():
        parameter = info.alias or field_name
        value = getattr(validated, field_name)
        if parameter in target.positional:
            args.append(value)
        else:
            kwargs[parameter] = value
    kwargs.update(validated.model_extra or {})
    if target.context_parameter is not None:
        kwargs[target.context_parameter] = context
    return args, kwargs


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"at /{'/'.join(str(part) for part in error['loc'])}: {error['msg']}" if error["loc"] else error["msg"]
        for error in exc.errors()
    )
