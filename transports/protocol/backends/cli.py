"""The CLI backend: a tools/call runs one program with an argument list, never through a shell
(docs/tool-backends.md "CLI").

The argument template is expanded into argv elements: a client's value is always data, one element
(or one per array item), so shell syntax reaches the program as literal text and nothing interprets
it. A value that would start an element with ``-`` is refused unless the template put a literal
``--`` before it, where a program reads it as an operand rather than an option.

Each call runs in a process group of its own (``start_new_session``): on timeout, cancellation or
too much output the whole group is stopped (SIGTERM, a short grace, then SIGKILL), children and
grandchildren included, and whatever the program left behind is killed when the call ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from transports.protocol import jsonrpc
from transports.protocol.backends.base import CallContext, ToolBackend
from transports.protocol.backends.results import EXCERPT_CHARS, error_result, excerpt, json_result, text_result
from transports.protocol.catalog import ToolEntry
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.methods import ARGUMENT_ERRORS_AS_RESULTS_SINCE

KILL_GRACE_SECONDS = 2.0  # between SIGTERM and SIGKILL of a call's process group
STDERR_TAIL_BYTES = 64 * 1024  # how much of the end of stderr is kept for an error result
READ_CHUNK = 64 * 1024

# "{{" and "}}" are literal braces; "{name}" and "{name*}" are placeholders; any other brace is a mistake.
_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
PLACEHOLDER_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)(\*?)")


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str
    spread: bool  # {name*}: one argv element per array item


Part = str | Placeholder


class ArgumentRefused(Exception):
    """A value the template would pass in a way the rules forbid; names the argument."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument
        self.message = message


def parse_element(element: str) -> list[Part]:
    """The literal text and placeholders of one template element; ValueError when malformed."""
    parts: list[Part] = []
    text: list[str] = []
    position = 0
    for match in _TOKEN_RE.finditer(element):
        text.append(element[position : match.start()])
        position = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            text.append(token[0])
            continue
        inner = match.group(1)
        placeholder = PLACEHOLDER_RE.fullmatch(inner) if inner is not None else None
        if placeholder is None:
            raise ValueError(
                f"{element!r} has a malformed placeholder {token!r}: use {{name}} or {{name*}} with a name of "
                "letters, digits, '_', '.' and '-', and write a literal brace as {{{{ or }}}}."
            )
        if "".join(text):
            parts.append("".join(text))
        text = []
        parts.append(Placeholder(placeholder.group(1), bool(placeholder.group(2))))
    text.append(element[position:])
    if "".join(text):
        parts.append("".join(text))
    if sum(1 for part in parts if isinstance(part, Placeholder) and part.spread) > 1:
        raise ValueError(f"{element!r} has more than one {{name*}} placeholder; an element may spread one array.")
    return parts


def render(value: Any) -> str:
    """A value as argv text: strings as they are, everything else as JSON (numbers, booleans, objects)."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def build_argv(template: Sequence[str], arguments: dict[str, Any]) -> list[str]:
    """The argv elements (after the command) for ``arguments``; ArgumentRefused for a value the rules
    forbid, ValueError for a malformed template."""
    argv: list[str] = []
    operands_only = False  # a literal "--" came earlier: what follows is read as operands
    for element in template:
        parts = parse_element(element)
        placeholders = [part for part in parts if isinstance(part, Placeholder)]
        if any(arguments.get(part.name) is None for part in placeholders):
            continue  # the client left the argument out: the element goes with it
        spread = next((part for part in placeholders if part.spread), None)
        items: list[Any] = [None]
        if spread is not None:
            value = arguments[spread.name]
            items = list(value) if isinstance(value, list) else [value]
        for item in items:
            pieces = [
                part if isinstance(part, str) else render(item if part.spread else arguments[part.name])
                for part in parts
            ]
            for part, piece in zip(parts, pieces, strict=True):
                if isinstance(part, Placeholder) and "\x00" in piece:
                    raise ArgumentRefused(part.name, f"Argument {part.name!r} contains a NUL character.")
            rendered = "".join(pieces)
            # Who wrote the element's first character: a value there could make it an option.
            leading = next((part for part, piece in zip(parts, pieces, strict=True) if piece), None)
            if isinstance(leading, Placeholder) and rendered.startswith("-") and not operands_only:
                raise ArgumentRefused(
                    leading.name,
                    f"Argument {leading.name!r} starts with '-', so the program would read it as an option: "
                    "the tool's argument template accepts such a value only after a '--' element.",
                )
            argv.append(rendered)
        if parts == ["--"]:
            operands_only = True
    return argv


def resolve_command(command: str) -> str | None:
    """The executable to run: an absolute path as is, a bare name looked up on the gateway's PATH now."""
    if os.path.isabs(command):
        return command if os.path.isfile(command) and os.access(command, os.X_OK) else None
    if "/" in command:
        return None
    return shutil.which(command, path=os.environ.get("PATH", os.defpath))


def environment(names: Sequence[str]) -> dict[str, str]:
    """Only the allowed variables of the gateway's environment, plus PATH."""
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    env.update({name: os.environ[name] for name in names if name in os.environ})
    return env


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
        os.killpg(pgid, sig)


async def stop_group(process: asyncio.subprocess.Process) -> None:
    """End the call's process group: SIGTERM, up to KILL_GRACE_SECONDS, then SIGKILL for what is left
    (a grandchild that outlived the program included)."""
    if process.returncode is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), KILL_GRACE_SECONDS)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            _signal_group(process.pid, signal.SIGKILL)
            raise
    _signal_group(process.pid, signal.SIGKILL)
    if process.returncode is None:
        await process.wait()


async def _read_at_most(stream: asyncio.StreamReader, limit: int) -> bytes | None:
    """Everything until EOF, or None as soon as it exceeds ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_tail(stream: asyncio.StreamReader, keep: int) -> tuple[bytes, int]:
    """The last ``keep`` bytes until EOF, and how many bytes came before them."""
    buffer = bytearray()
    dropped = 0
    while chunk := await stream.read(READ_CHUNK):
        buffer += chunk
        if len(buffer) > keep:
            dropped += len(buffer) - keep
            del buffer[:-keep]
    return bytes(buffer), dropped


def _tail_text(text: str) -> str:
    text = text.strip()
    if len(text) <= EXCERPT_CHARS:
        return text
    return f"({len(text) - EXCERPT_CHARS} earlier characters left out) …{text[-EXCERPT_CHARS:]}"


def _exit_message(command: str, code: int, stderr: bytes, dropped: int) -> str:
    if code < 0:
        try:
            how = f"was stopped by signal {signal.Signals(-code).name}"
        except ValueError:
            how = f"was stopped by signal {-code}"
    else:
        how = f"exited with code {code}"
    message = f"The command {command!r} {how}."
    text = _tail_text(stderr.decode("utf-8", errors="replace"))
    if dropped:
        text = f"({dropped} earlier bytes left out) {text}"
    if text:
        message += f" The end of its stderr:\n{text}"
    return message


class CliBackend(ToolBackend):
    """Tools of integration type ``cli``; ``max_output_bytes`` bounds stdout (and caps a tool's own bound)."""

    def __init__(self, *, max_output_bytes: int = 1024 * 1024) -> None:
        self.max_output_bytes = max_output_bytes

    def available(self, tool: ToolEntry) -> bool:
        config = tool.backend_config
        command = config.get("command")
        args = config.get("args", [])
        if not (isinstance(command, str) and command and isinstance(args, list)):
            return False
        try:
            for element in args:
                parse_element(element)
        except (ValueError, TypeError):
            return False  # stored before the rules were checked: not servable until fixed
        return True

    async def call(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        tool = context.tool
        config = tool.backend_config
        command: str = config["command"]
        try:
            argv = build_argv(config.get("args", []), arguments)
        except ArgumentRefused as refused:
            return _refuse(refused, context)
        program = resolve_command(command)
        if program is None:
            return error_result(
                f"The command {command!r} of tool {tool.name!r} was not found: it must be an executable file "
                "given by absolute path, or a program on the gateway's PATH."
            )
        own = config.get("max_output_bytes")
        limit = min(own, self.max_output_bytes) if isinstance(own, int) and own > 0 else self.max_output_bytes
        try:
            process = await asyncio.create_subprocess_exec(
                program,
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=environment(config.get("env", [])),
                cwd=config.get("cwd") or None,
                start_new_session=True,  # its own process group, so the whole group can be stopped
            )
        except (OSError, ValueError) as exc:  # ValueError: text the system cannot encode
            return error_result(
                f"The command {command!r} could not be started: {getattr(exc, 'strerror', None) or exc}."
            )
        return await self._finish(process, command, limit, config.get("output", "text"), context)

    async def _finish(
        self, process: asyncio.subprocess.Process, command: str, limit: int, output: str, context: CallContext
    ) -> dict[str, Any]:
        assert process.stdout is not None
        assert process.stderr is not None
        stderr_task = asyncio.create_task(_read_tail(process.stderr, STDERR_TAIL_BYTES))
        try:
            async with asyncio.timeout(context.timeout):
                stdout = await _read_at_most(process.stdout, limit)
                if stdout is None:
                    return error_result(
                        f"The command {command!r} wrote more than max_output_bytes ({limit} bytes) to stdout; "
                        "it was stopped. Ask for less output, or raise the tool's max_output_bytes."
                    )
                code = await process.wait()
                stderr, dropped = await stderr_task
        except TimeoutError:
            return error_result(
                f"The command {command!r} did not finish within the tool's timeout ({context.timeout:g} s); "
                "it was stopped."
            )
        finally:
            stderr_task.cancel()
            await stop_group(process)
        if code != 0:
            return error_result(_exit_message(command, code, stderr, dropped))
        text = stdout.decode("utf-8", errors="replace")
        if output == "json":
            try:
                value = orjson.loads(stdout)
            except orjson.JSONDecodeError as exc:
                return error_result(
                    f"The command {command!r} did not print valid JSON ({exc}). It printed: {excerpt(text)}"
                )
            return json_result(value, context.tool)
        return text_result(text)


def _refuse(refused: ArgumentRefused, context: CallContext) -> dict[str, Any]:
    """An argument the template rules refuse, answered like the gateway's own argument checks: a tool
    error since 2025-11-25 (SEP-1303, so the model can correct the call), -32602 before."""
    message = f"Invalid arguments for tool {context.tool.name!r}: {refused.message}"
    if context.exchange.session.protocol_version >= ARGUMENT_ERRORS_AS_RESULTS_SINCE:
        return error_result(message)
    raise JsonRpcError(jsonrpc.INVALID_PARAMS, message, {"field": f"/{refused.argument}"})
