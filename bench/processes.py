"""The benchmark's server processes: starting and stopping them, their CPU time, RSS and GC pauses."""

# ruff: noqa: S603
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from config import (
    CLK_TCK,
    FAST_UPSTREAM_SCRIPT,
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


# Every server started by this process, for stop_servers_on_sigterm.
STARTED: list[Server] = []


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
                # A process group of its own (stop() signals all it started), but not a session of its own: with
                # the kernel's autogroup scheduling (sched_autogroup_enabled) each session gets one share of the
                # CPUs, so a target of N sessions (N processes behind nginx) would get N shares on a busy machine
                # where `uvicorn --workers N` gets one. In the benchmark's session every process competes alike.
                process_group=0,
            )
        STARTED.append(self)
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


def start_fast_upstream(state: Path, name: str = "fast") -> Server:
    """bench/fast_upstream.py (dual-era, like the fixture): the upstream of the scale-out cells."""
    port = free_port()
    argv = [PYTHON, str(FAST_UPSTREAM_SCRIPT), "--port", str(port)]
    server = Server(name, argv, dict(os.environ), port, state / f"{name}.log", "/health")
    server.start()
    return server


def group_pids(leader: int) -> list[int]:
    """The processes in the process group of `leader`: each server starts in a group of its own, so this is the
    process and whatever it started (uvicorn's or ContextForge's workers, nginx's worker)."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == leader:  # after the command: state, ppid, pgrp
            out.append(int(entry.name))
    return out


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """utime + stime of each process still running (one that exited is left out)."""
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            out[pid] = proc_cpu_seconds(pid)
    return out


def rss_sum_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += proc_rss_mb(pid)
    return round(total, 1)


# nginx in front of several gateway processes: round robin without affinity, as deploy/nginx.conf and the
# two-replica tests (tests/replicas/conftest.py) configure it, with upstream keep-alive as deploy/nginx.conf has it
# (a connection per request would measure connection set-up, not the gateway). The idle pool is sized above the
# largest concurrency, so no cell closes and reopens connections to the gateways.
NGINX_CONF = """\
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}

http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}

    upstream gateway {{
{servers}
        keepalive 1024;
        keepalive_timeout 50s;
    }}

    server {{
        listen {host}:{port};
        client_max_body_size 16m;

        location / {{
            proxy_pass http://gateway;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_cache off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"""


def stop_servers_on_sigterm() -> None:
    """Make SIGTERM (`kill`, a job's timeout) stop every server the run started, then unwind the run like Ctrl-C
    does (its `finally` blocks drop scratch databases and Redis keys): by default SIGTERM ends Python at once and
    leaves them running, and a server still starting belongs to no target's teardown yet."""

    def stop_all(signum: int, _frame: object) -> None:
        for server in STARTED:
            server.stop()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop_all)


def nginx_binary() -> str | None:
    if os.access("/usr/sbin/nginx", os.X_OK):
        return "/usr/sbin/nginx"
    return shutil.which("nginx")


def nginx_server(directory: Path, name: str, backend_ports: list[int]) -> Server:
    """nginx in the foreground with its own prefix, pid, logs and temp paths in `directory` (not started)."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (`make system-deps` installs Debian's nginx-light)")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = directory / "nginx.conf"
    # As root nginx would switch its worker to "nobody", which cannot use this private directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    servers = "\n".join(f"        server {HOST}:{p} max_fails=0;" for p in backend_ports)
    conf.write_text(NGINX_CONF.format(user=user, dir=directory, host=HOST, port=port, servers=servers))
    argv = [binary, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf), "-g", "daemon off;"]
    return Server(name, argv, {"PATH": os.environ.get("PATH", "")}, port, directory / "nginx.out", "/health")
