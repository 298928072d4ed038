"""Supervised stdio servers (docs/federation.md, section 6): real child processes of tests/fixtures/stdio_crashy.py
that crash, refuse to start, hang and flood, under a real StdioSupervisor and UpstreamPool; and a live gateway
(daphne) that leaves no child behind when it is stopped. Processes are counted in /proc, never guessed."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from federation import processes
from tests.live_gateway import start_live_gateway
from transports.protocol import hooks
from transports.protocol.stdio_supervisor import StdioSupervisor
from transports.protocol.upstream.base import UpstreamConfig, UpstreamTimeout, UpstreamUnavailable
from transports.protocol.upstream.stdio import MAX_OUTBOX, StdioClient
from transports.protocol.upstream_pool import UpstreamPool

ROOT = Path(__file__).resolve().parents[2]
CRASHY = ROOT / "tests" / "fixtures" / "stdio_crashy.py"
BOUND = 20.0  # seconds any wait for a process to start, die or be replaced may take before the test fails


def config(*args: str, name: str = "crashy") -> UpstreamConfig:
    return UpstreamConfig(
        name=name,
        transport="stdio",
        command=sys.executable,
        args=(str(CRASHY), *args),
        request_timeout=15.0,
        shutdown_grace=1.0,
    )


def row(name: str = "crashy", *args: str, per_user: bool = False, at_boot: bool = False) -> dict[str, Any]:
    """A gateway row of the catalog snapshot, as the pool gets it."""
    return {
        "name": name,
        "transport": "stdio",
        "era": "auto",
        "url": "",
        "command": sys.executable,
        "args": [str(CRASHY), *args],
        "env": {},
        "cwd": None,
        "auth_type": "none",
        "credentials": {},
        "verify_tls": True,
        "ca_bundle": None,
        "per_user_process": per_user,
        "start_at_boot": at_boot,
    }


async def until(condition: Callable[[], Any], what: str, seconds: float = BOUND) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {seconds:g} s: {what}")


def stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, process group, session) of a process, from /proc; None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def alive(pid: int | None) -> bool:
    info = stat(pid) if pid is not None else None
    return info is not None and info[0] != "Z"


def session_members(sid: int) -> list[int]:
    """Live processes of the session ``sid`` (each child starts a session of its own, sid = its pid)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := stat(int(entry.name))) is not None and info[0] != "Z" and info[3] == sid:
            found.append(int(entry.name))
    return found


def tagged(tag: str) -> list[int]:
    """Live processes whose command line carries ``tag``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if tag.encode() in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


async def call(client: StdioClient, tool: str, timeout: float | None = None, **arguments: Any) -> str:
    result = await client.request("tools/call", {"name": tool, "arguments": arguments}, timeout=timeout)
    return str(result["content"][0]["text"])


def only_state(supervisor: StdioSupervisor) -> dict[str, Any]:
    states = supervisor.states()
    assert len(states) == 1, states
    return states[0]


@pytest.fixture(autouse=True)
def reported() -> Iterator[list[tuple[str, dict[str, Any], float]]]:
    """What went out on hooks.upstream_process_changed, and when (federation's database writer is kept out
    of the way)."""
    seen: list[tuple[str, dict[str, Any], float]] = []

    async def record(name: str, state: dict[str, Any]) -> None:
        seen.append((name, state, time.monotonic()))

    hooks.upstream_process_changed.disconnect(processes.record_process_state)
    hooks.upstream_process_changed.connect(record)
    try:
        yield seen
    finally:
        hooks.upstream_process_changed.disconnect(record)
        hooks.upstream_process_changed.connect(processes.record_process_state)


@pytest.fixture
async def supervisors() -> AsyncIterator[list[StdioSupervisor]]:
    """Supervisors made by a test, closed after it even when it fails."""
    made: list[StdioSupervisor] = []
    yield made
    for supervisor in made:
        await supervisor.aclose()


def make(made: list[StdioSupervisor], **options: Any) -> StdioSupervisor:
    supervisor = StdioSupervisor(**{"idle_timeout": 0, **options})
    made.append(supervisor)
    return supervisor


async def test_a_crashed_process_is_restarted_at_once_and_calls_work_again(reported, supervisors) -> None:
    """The child exits with code 1 mid-call: the call fails with the reason, the supervisor restarts it at
    once without waiting for a call (a first death is not backed off), and the next call is answered by the
    new process."""
    supervisor = make(supervisors, max_backoff=4)
    client = await supervisor.client(key="crashy", config=config("--crash-after", "1"))
    first = client.pid
    assert await call(client, "echo", text="one") == "one"
    with pytest.raises(UpstreamUnavailable, match="exited with code 1"):
        await call(client, "echo", text="two")
    state = await until(
        lambda: (s := only_state(supervisor))["state"] == "running" and s["pid"] != first and s, "a new process"
    )
    assert state["restarts"] == 1
    assert "exited with code 1" in state["last_exit"]
    assert "boom: crashing after 1 calls" in state["last_exit"]
    assert not alive(first)
    again = await supervisor.client(key="crashy", config=config("--crash-after", "1"))
    assert await call(again, "echo", text="three") == "three"
    await until(lambda: any(s["state"] == "running" and s["restarts"] == 1 for _, s, _ in reported), "reported")
    states = [s["state"] for name, s, _ in reported if name == "crashy"]
    assert states[:3] == ["starting", "running", "restarting"], states
    assert {"state", "pid", "restarts", "since", "last_exit", "host"} <= set(reported[-1][1])


async def test_a_process_that_keeps_dying_is_restarted_at_once_then_backed_off(supervisors) -> None:
    """A process that runs and dies is restarted at once the first time (the next call is served); dying
    again without a stable run makes callers wait 1 s, then 2 s (capped by GATEWAY_STDIO_MAX_BACKOFF)."""
    supervisor = make(supervisors, max_backoff=2, stable_after=60)
    settings = config("--crash-after", "0")  # dies at its first tool call

    async def crash(client: Any) -> None:
        with pytest.raises(UpstreamUnavailable, match="exited with code 1"):
            await call(client, "echo", text="x")

    await crash(await supervisor.client(key="crashy", config=settings))
    await crash(await supervisor.client(key="crashy", config=settings))  # restarted at once: no wait
    with pytest.raises(UpstreamUnavailable, match=r"exited with code 1; restarting in 1 s"):
        await supervisor.client(key="crashy", config=settings)
    await crash(await until_client(supervisor, settings))
    with pytest.raises(UpstreamUnavailable, match=r"exited with code 1; restarting in 2 s"):
        await supervisor.client(key="crashy", config=settings)


async def until_client(supervisor: StdioSupervisor, settings: Any) -> Any:
    """The unit's client once its restart wait (if any) is over."""
    async with asyncio.timeout(BOUND):
        while True:
            try:
                return await supervisor.client(key="crashy", config=settings)
            except UpstreamUnavailable:
                await asyncio.sleep(0.1)


async def test_restarts_back_off_and_calls_meanwhile_fail_at_once(tmp_path, reported, supervisors) -> None:
    """A child that cannot start is retried after 1 s, 2 s, then at most GATEWAY_STDIO_MAX_BACKOFF; a call
    meanwhile fails at once naming the exit, the wait and the last stderr; once it stays up, the count starts
    again (a death after a stable run is restarted at once)."""
    flag, starts = tmp_path / "fail", tmp_path / "starts"
    flag.touch()
    supervisor = make(supervisors, max_backoff=2, stable_after=0.5)
    settings = config("--fail-start", str(flag), "--starts", str(starts))
    with pytest.raises(UpstreamUnavailable) as first:
        await supervisor.client(key="crashy", config=settings)
    assert str(first.value) == (
        "crashy: the process exited with code 1; restarting in 1 s; last stderr: cannot open the database"
    )
    async with asyncio.timeout(BOUND):  # a bound, not a measurement: the answer does not wait for the restart
        with pytest.raises(UpstreamUnavailable, match=r"restarting in \d+ s; last stderr: cannot open the database"):
            await supervisor.client(key="crashy", config=settings)

    def failures() -> list[tuple[float, float]]:  # (when reported, the backoff it announced)
        return [(at, s["backoff"]) for _, s, at in reported if s["state"] == "restarting"]

    seen = await until(lambda: len(failures()) >= 4 and failures(), "four failed starts")
    assert [backoff for _, backoff in seen[:4]] == [1, 2, 2, 2]  # doubling, capped at GATEWAY_STDIO_MAX_BACKOFF
    for (at, backoff), (later, _) in itertools.pairwise(seen):
        assert later - at >= backoff - 0.05, seen  # never retried before its backoff
    assert starts.read_text().count("\n") >= 4
    flag.unlink()
    state = await until(lambda: (s := only_state(supervisor))["state"] == "running" and s, "running again", 10)
    client = await supervisor.client(key="crashy", config=settings)
    assert await call(client, "echo", text="up") == "up"
    await asyncio.sleep(0.7)  # stays up longer than stable_after
    os.kill(state["pid"], signal.SIGKILL)
    killed = state["pid"]
    state = await until(  # after a stable run, a death is restarted at once
        lambda: (s := only_state(supervisor))["state"] == "running" and s["pid"] != killed and s, "a new process", 5
    )
    assert "killed by SIGKILL" in state["last_exit"]


async def test_a_hung_child_is_killed_and_replaced(supervisors) -> None:
    """A call to a child that stopped reading its stdin times out; the ping that follows gets no answer;
    the child is killed and a new one serves the next call."""
    supervisor = make(supervisors, hang_probe_timeout=1)
    client = await supervisor.client(key="crashy", config=config())
    hung = client.pid
    with pytest.raises(UpstreamTimeout):
        await call(client, "hang", timeout=1)
    await until(lambda: not alive(hung), "the hung child killed")
    state = await until(lambda: (s := only_state(supervisor))["state"] == "running" and s, "a new child")
    assert state["pid"] != hung
    assert "stopped answering" in state["last_exit"]
    client = await supervisor.client(key="crashy", config=config())
    assert await call(client, "echo", text="back") == "back"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_flooding_child_does_not_grow_memory(supervisors) -> None:
    """200,000 lines of noise and notifications on stdout, then thousands of pings while the child reads
    nothing: the gateway's memory stays bounded, the queue of answers too, and calls are still answered."""
    supervisor = make(supervisors)
    client = await supervisor.client(key="crashy", config=config())
    before = rss_kib()
    assert await call(client, "flood", timeout=120, lines=200_000) == "flooded"
    assert await call(client, "pingflood", timeout=60, count=20_000) == "pinged"
    assert len(client._notices) <= MAX_OUTBOX
    assert await call(client, "echo", text="still here") == "still here"
    assert rss_kib() - before < 64 * 1024, "memory grew by more than 64 MiB"


async def test_an_unused_process_is_stopped(reported, supervisors) -> None:
    """After GATEWAY_STDIO_IDLE_TIMEOUT s without calls the process is stopped; the next call starts one."""
    supervisor = make(supervisors, idle_timeout=0.5)
    client = await supervisor.client(key="crashy", config=config())
    pid = client.pid
    state = await until(lambda: (s := only_state(supervisor))["state"] == "stopped" and s, "stopped when idle")
    assert "GATEWAY_STDIO_IDLE_TIMEOUT" in state["reason"]
    await until(lambda: not alive(pid), "the idle child gone")
    client = await supervisor.client(key="crashy", config=config())
    assert client.pid != pid
    assert await call(client, "echo", text="x") == "x"


async def test_the_process_limit_stops_the_least_recently_used_idle_one_or_refuses(supervisors) -> None:
    """With GATEWAY_STDIO_MAX_PROCESSES=1 a second gateway's process replaces the idle first one; while that
    one is busy, a third is refused with a sentence naming the setting."""
    supervisor = make(supervisors, max_processes=1)
    first = await supervisor.client(key="a", config=config(name="a"))
    first_pid = first.pid
    second = await supervisor.client(key="b", config=config(name="b"))
    await until(lambda: not alive(first_pid), "the idle process stopped")
    states = {s["gateway"]: s for s in supervisor.states()}
    assert states["a"]["state"] == "stopped"
    assert "GATEWAY_STDIO_MAX_PROCESSES" in states["a"]["reason"]
    busy = asyncio.create_task(call(second, "sleep", seconds=2))
    await until(lambda: second.busy, "a call in flight")
    with pytest.raises(UpstreamUnavailable, match="GATEWAY_STDIO_MAX_PROCESSES"):
        await supervisor.client(key="c", config=config(name="c"))
    assert await busy == "slept"


async def test_per_user_gateways_get_a_process_per_user() -> None:
    """per_user_process: two users, two processes (the same user keeps hers); otherwise one shared."""
    pool = UpstreamPool(request_timeout=15.0, stdio=StdioSupervisor(idle_timeout=0))
    try:
        personal = row("personal", per_user=True)
        alice = await pool.get("personal", personal, user="alice")
        bob = await pool.get("personal", personal, user="bob")
        assert alice.pid != bob.pid  # type: ignore[attr-defined]
        assert await pool.get("personal", personal, user="alice") is alice
        shared = row("shared")
        assert await pool.get("shared", shared, user="alice") is await pool.get("shared", shared, user="bob")
        labels = {(s["gateway"], s["process"]) for s in pool.stdio.states()}
        assert labels == {("personal", "user alice"), ("personal", "user bob"), ("shared", "shared")}
    finally:
        await pool.aclose()


async def test_start_at_boot_starts_the_shared_process() -> None:
    """A start_at_boot row is started when the catalog is loaded, without a call, and kept when idle."""
    pool = UpstreamPool(request_timeout=15.0, stdio=StdioSupervisor(idle_timeout=0.3))
    try:
        pool.start_at_boot([row("eager", at_boot=True), row("lazy")])
        state = await until(
            lambda: [s for s in pool.stdio.states() if s["state"] == "running"], "the eager one running"
        )
        assert [s["gateway"] for s in state] == ["eager"]
        await asyncio.sleep(0.6)  # longer than the idle timeout: a boot process stays
        assert only_state(pool.stdio)["state"] == "running"
    finally:
        await pool.aclose()


async def test_no_child_is_left_after_the_pool_closes() -> None:
    """Closing the pool ends each child's whole process group, a grandchild that ignores SIGTERM too."""
    pool = UpstreamPool(request_timeout=15.0, stdio=StdioSupervisor(idle_timeout=0))
    client = await pool.get("crashy", row("crashy", "--grandchild"))
    sid = client.pid  # type: ignore[attr-defined]
    assert sid is not None
    await until(lambda: len(session_members(sid)) >= 2, "the child and its grandchild")
    await pool.aclose()
    await until(lambda: not session_members(sid), "no process of the child's session left")


def test_no_child_is_left_when_the_gateway_process_is_killed(tmp_path) -> None:
    """A gateway process SIGKILLed (no atexit) still takes its child along: PR_SET_PDEATHSIG."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    tag = f"pdeath-{uuid.uuid4().hex}"
    script = (
        "import asyncio, sys\n"
        "from transports.protocol.upstream.base import UpstreamConfig\n"
        "from transports.protocol.upstream.stdio import StdioClient\n"
        "async def main():\n"
        f"    client = StdioClient(UpstreamConfig(name='x', transport='stdio', command=sys.executable, "
        f"args=({str(CRASHY)!r}, '--tag', {tag!r})))\n"
        "    await client.connect()\n"
        "    print(client.pid, flush=True)\n"
        "    await asyncio.sleep(300)\n"
        "asyncio.run(main())\n"
    )
    harness = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert harness.stdout is not None
        child = int(harness.stdout.readline())
        assert alive(child)
        harness.kill()
        harness.wait(BOUND)
        deadline = time.monotonic() + BOUND
        while tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not tagged(tag), "the child outlived its SIGKILLed parent"
    finally:
        harness.kill()


async def test_no_child_is_left_after_the_gateway_is_stopped(tmp_path) -> None:
    """A live gateway (daphne) with a stdio gateway that started a grandchild: SIGTERM to daphne, and no
    process of the stdio server is left (its groups are SIGTERMed, then SIGKILLed, at exit)."""
    tag = f"live-{uuid.uuid4().hex}"
    with start_live_gateway(tmp_path) as gateway:
        out = gateway.manage(
            "gateway_add", "crashy", "--command", sys.executable, f"--arg={CRASHY}", "--arg=--grandchild",
            "--arg=--tag", f"--arg={tag}",
        )  # fmt: skip
        assert "Registered 'crashy'" in out, out
        gateway.manage("server_add", "demo", "--gateway", "crashy")
        await until(lambda: not tagged(tag), "the registration's own reader gone")
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {gateway.token}"}, timeout=30)
        async with Client(streamable_http_client(gateway.mcp_url("demo"), http_client=http)) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            pid_tool = next(name for name in names if name.endswith("pid"))
            result = await client.call_tool(pid_tool, {})
            child = int(result.content[0].text)  # type: ignore[union-attr]
        assert alive(child)
        await until(lambda: len(tagged(tag)) >= 2, "the child and its grandchild")
        show = (
            "from registry.models import Gateway; "
            "print(list(Gateway.objects.get(name='crashy').process_state.values()))"
        )
        deadline = time.monotonic() + BOUND
        while f"'pid': {child}" not in (recorded := gateway.manage("shell", "-c", show)):
            assert time.monotonic() < deadline, f"the running process was not recorded: {recorded}"
            await asyncio.sleep(0.5)
        assert "'state': 'running'" in recorded
    # start_live_gateway has SIGTERMed daphne's process group (not the child's: it has a session of its own).
    await until(lambda: not tagged(tag), "no process of the stdio server left after the gateway stopped")
