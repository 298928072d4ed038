"""The stdio wrapper's command line: options, logging to stderr, stdin and stdout, signals, and ``main``
(run by `scripts/mcp-gateway-stdio` and `python -m transports.stdio_bridge`; `manage.py mcp_stdio` uses
the same options). No Django here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from transports.protocol.upstream import headers as mcp_headers
from transports.stdio_bridge.config import TOKEN_ENV, URL_ENV, BridgeConfig
from transports.stdio_bridge.relay import StdioBridge

logger = logging.getLogger("transports.stdio_bridge")  # one logger for the package (cli configures it)


# -- stdin and stdout -------------------------------------------------------------------------------


async def _open_stdio(limit: int) -> tuple[Callable[[], Awaitable[bytes]], Callable[[bytes], Awaitable[None]]]:
    """(read one line of stdin, write one line to stdout): non-blocking pipes where the streams are
    pipes, blocking calls in a thread otherwise (a file, a terminal)."""
    loop = asyncio.get_running_loop()
    lock = asyncio.Lock()
    try:
        reader = asyncio.StreamReader(limit=limit)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def read_line() -> bytes:
            while True:
                try:
                    return await reader.readline()
                except ValueError:  # longer than the limit: the rest of it arrives as another (bad) line
                    logger.warning("a line on stdin was longer than %s bytes: dropped", limit)

    except (ValueError, OSError):

        async def read_line() -> bytes:
            return await loop.run_in_executor(None, sys.stdin.buffer.readline)

    stdout = sys.stdout.buffer
    try:
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, stdout)
        writer = asyncio.StreamWriter(transport, protocol, None, loop)

        async def write_line(data: bytes) -> None:
            async with lock:
                writer.write(data + b"\n")
                await writer.drain()

    except (ValueError, OSError):

        async def write_line(data: bytes) -> None:
            async with lock:
                await loop.run_in_executor(None, _blocking_write, stdout, data + b"\n")

    return read_line, write_line


def _blocking_write(stream: Any, data: bytes) -> None:
    stream.write(data)
    stream.flush()


async def serve(config: BridgeConfig) -> None:
    """Run the bridge on this process's stdin and stdout until stdin ends or a signal arrives."""
    read_line, write_line = await _open_stdio(config.max_message_size)
    bridge = StdioBridge(config, write_line)
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, main.cancel)  # type: ignore[union-attr]
    try:
        await bridge.run(read_line)
    except asyncio.CancelledError:
        pass
    except (BrokenPipeError, ConnectionResetError):
        logger.info("stdout closed: the client went away")


# -- command line ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `manage.py mcp_stdio` and `scripts/mcp-gateway-stdio`."""
    parser.add_argument(
        "--url",
        default=os.environ.get(URL_ENV),
        help=f"the gateway's MCP endpoint, e.g. https://gw.example.com/servers/demo/mcp (or {URL_ENV})",
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"bearer token (`manage.py issue_token`); better passed in {TOKEN_ENV}, which process "
        "listings do not show",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra HTTP header for every request (repeatable), e.g. 'Authorization: Basic ...'",
    )
    parser.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to open a connection (10)")
    parser.add_argument(
        "--reconnect-timeout",
        type=float,
        default=30.0,
        help="seconds a request waits for an unreachable gateway before it gets an error (30)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="do not verify the gateway's TLS certificate (testing only)"
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("MCP_GATEWAY_STDIO_LOG_LEVEL", "WARNING"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="what the wrapper logs to stderr (WARNING)",
    )


def config_from(options: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> BridgeConfig:
    """A BridgeConfig from parsed options; ValueError naming what is wrong."""
    url = options.get("url")
    if not url or not str(url).startswith(("http://", "https://")):
        raise ValueError(
            f"--url (or {URL_ENV}) must be the gateway's http(s) MCP endpoint, e.g. http://127.0.0.1:8000/mcp"
        )
    headers: dict[str, str] = {}
    for raw in options.get("header") or []:
        name, sep, value = str(raw).partition(":")
        if not sep or not mcp_headers.is_token(name.strip()) or any(ch in value for ch in "\r\n\0"):
            raise ValueError(f"--header {raw!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    token = options.get("token") or environ.get(TOKEN_ENV)
    if token:
        headers["Authorization"] = f"Bearer {token.strip()}"
    return BridgeConfig(
        url=str(url),
        headers=headers,
        connect_timeout=float(options.get("connect_timeout") or 10.0),
        reconnect_timeout=float(options.get("reconnect_timeout") or 30.0),
        verify_tls=not options.get("insecure"),
    )


def configure_logging(level: str) -> None:
    """Logs to stderr only: stdout carries MCP messages and nothing else (basic/transports, stdio)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s mcp-gateway-stdio %(levelname)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mcp-gateway-stdio",
        description="Serve MCP on stdin/stdout for a client that only speaks stdio, relayed to an MCP Gateway "
        "over Streamable HTTP.",
    )
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    configure_logging(options["log_level"])
    try:
        config = config_from(options)
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(serve(config))
    return 0
