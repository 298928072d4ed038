"""The benchmark's server processes: starting and stopping them, their CPU time, RSS and GC pauses."""

# ruff: noqa: S603
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from config import (
    CLK_TCK,
    GC_PROBE_DIR,
    HOST,
    MANY_TOOLS_PAGE,
    PYTHON,
    REST_API_MODULE,
    ROOT,
    UPSTREAM_SCRIPT,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    health_path: str | None = None
    process: subprocess.Popen[bytes] | None = None
    cwd: Path = ROOT  # the checkout it runs from (a --baseline gateway runs from the baseline's)

    @property
    def gc_log(self) -> Path:
        return self.log_path.with_suffix(".gc.log")

    def start(self, timeout: float = 60.0) -> None:
        env = dict(self.env)
        env["BENCH_GC_LOG"] = str(self.gc_log)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(GC_PROBE_DIR), env.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self._ready():
                return
            time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n{tail}")

    def _ready(self) -> bool:
        if self.health_path is None:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return True
            except OSError:
                return False
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}{self.health_path}", timeout=1) as r:
                return r.status < 500
        except Exception:
            return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def gc_pauses(server: Server, t0: float, t1: float) -> list[tuple[float, int, float]]:
    """(end time, generation, pause ms) of the collections logged by the process between t0 and t1."""
    out = []
    with contextlib.suppress(OSError), open(server.gc_log) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                end, gen, ms = float(parts[0]), int(parts[1]), float(parts[2])
                if t0 <= end and end - ms / 1000 <= t1:
                    out.append((end, gen, ms))
    return out


def start_upstream(state: Path, name: str, many_tools: int = 0) -> Server:
    port = free_port()
    argv = [PYTHON, str(UPSTREAM_SCRIPT), "--transport", "streamable-http", "--port", str(port)]
    if many_tools:
        argv += ["--many-tools", str(many_tools), "--page-size", str(MANY_TOOLS_PAGE), "--bulk-only"]
    server = Server(name, argv, dict(os.environ), port, state / f"{name}.log")
    server.start()
    return server


def start_rest_api(state: Path) -> Server:
    """The tests' HTTP API in its own process: the API behind the REST-tool workload's tool."""
    port = free_port()
    argv = [PYTHON, "-m", REST_API_MODULE, "--port", str(port)]
    server = Server("rest-api", argv, dict(os.environ), port, state / "rest-api.log")
    server.start()
    return server
