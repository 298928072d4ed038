"""The stdio upstream client: a child process speaking newline-delimited JSON-RPC on stdin/stdout.

The process is started once per connection (never per call) in its own process group. Its stderr is
drained to the `transports.protocol.upstream.stderr` logger, line by line, each line cut to a bounded
length; the last lines are kept for the error message when the process dies. Lines on stdout that are
not JSON are logged and skipped. When stdout closes, every call in flight fails with
UpstreamUnavailable naming the exit code. `aclose()` closes stdin, then sends SIGTERM to the process
group, then SIGKILL after `shutdown_grace` seconds.

Era: `connect()` first sends `server/discover` with the 2026-07-28 envelope and waits `probe_timeout`;
any error or silence falls back to `initialize` (stdio, "Backward Compatibility"). A modern upstream gets
the envelope on every request, and `notifications/cancelled` to cancel one.

The child gets a small allow-listed environment (PATH, HOME, locale, ...) plus `config.env`, never the
gateway's own environment (which holds its secrets).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from transports.protocol.upstream.base import MessageHandler, UpstreamConfig, UpstreamTimeout, UpstreamUnavailable
from transports.protocol.upstream.engine import RpcClient

logger = logging.getLogger("transports.protocol.upstream")
stderr_logger = logging.getLogger("transports.protocol.upstream.stderr")

INHERITED_ENV = (
    "HOME",
    "LOGNAME",
    "PATH",
    "SHELL",
    "TERM",
    "USER",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TZ",
    "SYSTEMROOT",
)
MAX_STDERR_LINE = 2000
STDERR_TAIL = 10
_CHUNK = 64 * 1024
_CLOSE_STDIN_GRACE = 0.5
# Answers and cancellations queued for a child that does not read its stdin (a flood of pings).
MAX_OUTBOX = 64
_NOISE_LOGGED = 5  # stdout lines that are not JSON: the first few are logged, then one in _NOISE_EVERY
_NOISE_EVERY = 1000
_PR_SET_PDEATHSIG = 1
_EXIT_GRACE = 2.0  # atexit: seconds between SIGTERM and SIGKILL

# Process groups of the children started by this process and not yet known to be gone (pid = pgid).
_live_groups: set[int] = set()
_libc: Any = None


def _parent_death_signal(parent: int) -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGTERM the child when this process dies (Linux only)."""
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child must not load libraries
        except OSError:
            return None
    prctl = _libc.prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would send the signal
            os._exit(1)

    return preexec


def _group_alive(pgid: int, *, reap: bool = False) -> bool:
    if reap:  # only when no event loop's child watcher may reap it: a zombie leader still counts
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_children(grace: float = _EXIT_GRACE) -> int:
    """SIGTERM every live child process group, SIGKILL those still there after ``grace`` s; synchronous
    (it runs at interpreter exit, when no event loop is left). Returns how many groups were signalled."""
    groups = [pgid for pgid in list(_live_groups) if _group_alive(pgid, reap=True)]
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_group_alive(pgid, reap=True) for pgid in groups):
        time.sleep(0.05)
    for pgid in groups:
        if _group_alive(pgid, reap=True):
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
    _live_groups.clear()
    return len(groups)


atexit.register(reap_children)


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
    env.update(extra)
    return env


class StdioClient(RpcClient):
    SPEAKS_MODERN = True

    def __init__(self, config: UpstreamConfig) -> None:
        super().__init__(config)
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stderr: asyncio.Task[None] | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._noise = 0  # stdout lines of this connection that were not JSON
        self.exit_code: int | None = None  # of the last process, once it exited
        self.last_active = time.monotonic()  # when a call last started or ended
        # The supervisor's ears: the process died on its own (code, sentence); a call timed out.
        self.on_exit: Callable[[int | None, str], None] | None = None
        self.on_timeout: Callable[[], None] | None = None

    @property
    def stderr_tail(self) -> list[str]:
        """The last lines the process wrote to stderr (each cut to 200 characters)."""
        return list(self._stderr_tail)

    @property
    def busy(self) -> bool:
        """Whether calls are in flight (a subscription stream counts)."""
        return bool(self._pending)

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        on_message: MessageHandler | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        self.last_active = time.monotonic()
        try:
            return await super().request(method, params, timeout=timeout, on_message=on_message, headers=headers)
        except UpstreamTimeout:
            if self.on_timeout is not None:
                self.on_timeout()
            raise
        finally:
            self.last_active = time.monotonic()

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def _open_transport(self) -> None:
        name = self.config.name
        if not self.config.command:
            raise UpstreamUnavailable(f"{name}: no command configured")
        self._stderr_tail.clear()
        self._noise = 0
        self.exit_code = None
        try:
            process = await asyncio.create_subprocess_exec(
                self.config.command,
                *self.config.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=child_environment(dict(self.config.env)),
                cwd=self.config.cwd or None,
                start_new_session=True,
                preexec_fn=_parent_death_signal(os.getpid()),
            )
        except OSError as exc:
            raise UpstreamUnavailable(f"{name}: cannot start {self.config.command!r}: {exc}") from None
        _live_groups.add(process.pid)
        self._process = process
        self._stderr = self.spawn(self._drain_stderr(process))
        self._reader = self.spawn(self._read(process, self._generation))

    async def _close_transport(self, *, final: bool) -> None:
        process, self._process = self._process, None
        if process is not None:
            await self._stop(process)
            if self.exit_code is None:
                self.exit_code = process.returncode
            if process.returncode is not None:
                _live_groups.discard(process.pid)
        await self.settle([self._reader, self._stderr])
        self._reader = self._stderr = None

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        """Close stdin, then SIGTERM, then SIGKILL: each step only if the process is still there."""
        if process.stdin is not None:
            with contextlib.suppress(OSError, RuntimeError):
                process.stdin.close()
        if not await self._exited(process, _CLOSE_STDIN_GRACE):
            self._signal(process, signal.SIGTERM)
            if not await self._exited(process, self.config.shutdown_grace):
                logger.warning("%s: process %s ignored SIGTERM; killing it", self.config.name, process.pid)
                self._signal(process, signal.SIGKILL)
                await self._exited(process, 5.0)
        if process.returncode is not None:
            await self._end_group(process.pid)

    async def _end_group(self, pgid: int) -> None:
        """The leader is gone; what it started in its group (a wrapper's children) goes too."""
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if not _group_alive(pgid):
                return
            with contextlib.suppress(OSError):
                os.killpg(pgid, signum)
            deadline = time.monotonic() + self.config.shutdown_grace
            while time.monotonic() < deadline and _group_alive(pgid):
                await asyncio.sleep(0.05)

    @staticmethod
    async def _exited(process: asyncio.subprocess.Process, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
        except TimeoutError:
            return False
        return True

    @staticmethod
    def _signal(process: asyncio.subprocess.Process, signum: signal.Signals) -> None:
        if process.returncode is not None:
            return
        try:
            os.killpg(process.pid, signum)  # the whole group: wrappers such as npx leave children
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)

    async def _read(self, process: asyncio.subprocess.Process, generation: int) -> None:
        name = self.config.name
        stdout = process.stdout
        assert stdout is not None
        limit = self.config.max_message_size
        buffer = bytearray()
        skipping = False  # inside an oversized line: drop bytes up to the next newline
        try:
            while chunk := await stdout.read(_CHUNK):
                buffer += chunk
                start = 0
                while (end := buffer.find(b"\n", start)) != -1:
                    line = bytes(buffer[start:end])
                    start = end + 1
                    if skipping:
                        skipping = False
                        continue
                    if len(line) > limit:
                        logger.warning("%s: dropped a stdout line longer than %s bytes", name, limit)
                        continue
                    await self._line(line)
                if start:
                    del buffer[:start]
                if len(buffer) > limit:
                    if not skipping:
                        logger.warning("%s: dropped a stdout line longer than %s bytes", name, limit)
                    skipping = True
                    buffer.clear()
        except (OSError, ValueError) as exc:
            logger.debug("%s: reading stdout failed: %r", name, exc)
        code = await self._exit_code(process)
        if self._stderr is not None:
            await asyncio.wait({self._stderr}, timeout=0.5)  # collect its last words
        reason = "the process closed its stdout" if code is None else f"the process exited with code {code}"
        if self._stderr_tail:
            reason += "; last stderr: " + " | ".join(self._stderr_tail)
        self.exit_code = code
        if code is not None and not _group_alive(process.pid):
            _live_groups.discard(process.pid)
        self._connection_lost(reason, generation)
        if self._process is process and self.on_exit is not None:  # died on its own, not stopped by us
            self.on_exit(code, reason)

    async def _line(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            self._noise += 1
            if self._noise <= _NOISE_LOGGED or self._noise % _NOISE_EVERY == 0:
                logger.warning(
                    "%s: skipped a stdout line that is not JSON (%s so far): %.200r",
                    self.config.name,
                    self._noise,
                    line,
                )
            return
        await self._receive(message)

    @staticmethod
    async def _exit_code(process: asyncio.subprocess.Process) -> int | None:
        try:
            async with asyncio.timeout(1.0):
                return await process.wait()
        except TimeoutError:
            return None

    async def _drain_stderr(self, process: asyncio.subprocess.Process) -> None:
        stderr = process.stderr
        assert stderr is not None
        buffer = bytearray()
        with contextlib.suppress(OSError, ValueError):
            while chunk := await stderr.read(_CHUNK):
                buffer += chunk
                *lines, rest = buffer.split(b"\n")
                for line in lines:
                    self._stderr_line(line)
                buffer = bytearray(rest[:MAX_STDERR_LINE])  # an endless line is cut, not buffered
        if buffer:
            self._stderr_line(bytes(buffer))

    def _stderr_line(self, raw: bytes | bytearray) -> None:
        text = raw[:MAX_STDERR_LINE].decode("utf-8", errors="replace").rstrip()
        if text:
            self._stderr_tail.append(text[:200])
            stderr_logger.info("%s: %s", self.config.name, text)

    def _send_soon(self, message: dict[str, Any]) -> None:
        # A child that floods requests (pings) and never reads its stdin would queue answers without end.
        if len(self._notices) >= MAX_OUTBOX:
            what = message.get("method") or f"answer to {message.get('id')!r}"
            logger.debug("%s: dropped a %s for the process: %s are queued", self.config.name, what, MAX_OUTBOX)
            return
        super()._send_soon(message)

    async def _send(self, message: dict[str, Any]) -> None:
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            raise UpstreamUnavailable(f"{self.config.name}: the process is not running")
        try:
            process.stdin.write(orjson.dumps(message) + b"\n")
            await process.stdin.drain()
        except (OSError, RuntimeError) as exc:
            raise UpstreamUnavailable(f"{self.config.name}: writing to the process failed: {exc!r}") from None
