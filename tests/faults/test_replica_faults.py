"""Faults under two replicas behind nginx: issue #16 item 4, faults 2 (a replica killed mid-session) and 3 (Redis
restarted).

The topology is tests/replicas' (two daphne processes with one SECRET_KEY, one PostgreSQL database, round-robin
nginx with no affinity, the SDK upstream fixture registered as `fx` and served whole by the virtual server
`demo`), except that Redis is a `redis-server` of this module's own on a free port, keeping nothing on disk,
which the tests stop and start again; the machine's Redis is never used. Skipped unless DATABASE_URL names
PostgreSQL (CI's PostgreSQL + Redis pass).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.faults.harness import (
    ACCEPT,
    INIT,
    SESSION_VERSION,
    McpClient,
    Process,
    SseReader,
    http_client,
    postgres_url,
    redis_server,
    scratch_database,
)
from tests.fixtures.servers import RunningUpstream, start_upstream
from tests.jsonrpc import message
from tests.live_gateway import ADMIN_PASSWORD, LiveGateway, free_port, tail
from tests.replicas.conftest import SETUP_SCRIPT, Nginx, Replica, running_nginx, stop_all

SECRET_KEY = "faults-replicas-secret-key-0123456789-abcdefghij"
SERVER = "demo"
WAIT = 10.0  # seconds any one answer may take
ELICITATION = {"elicitation": {}}
USER = {"action": "accept", "content": {"username": "ada", "email": "ada@example.com"}}
USER_TEXT = 'User response: action=accept, content={"email": "ada@example.com", "username": "ada"}'


@dataclass
class Cluster:
    a: Replica
    b: Replica
    nginx: Nginx
    redis: Process
    upstream: RunningUpstream
    token: str

    @property
    def replicas(self) -> tuple[Replica, Replica]:
        return self.a, self.b

    def endpoint(self, base: str) -> str:
        return f"{base}/servers/{SERVER}/mcp"

    def kill(self, replica: Replica) -> None:
        """SIGKILL to the replica's process group: it says goodbye to no one."""
        process, replica.process = replica.process, None
        assert process is not None
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def logs(self) -> str:
        parts = [f"--- {r.name}:\n{tail(r.log_path, 3000)}" for r in self.replicas]
        return "\n".join([*parts, f"--- redis:\n{self.redis.log(1000)}"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    server = postgres_url()
    state = tmp_path_factory.mktemp("faults-replicas")
    with scratch_database(server) as database, contextlib.ExitStack() as stack:
        redis = redis_server(state)
        redis.start()
        stack.callback(redis.stop)
        upstream = start_upstream("streamable-http", era="legacy")
        stack.callback(upstream.stop)
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
            "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
            "DATABASE_URL": database,
            "REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
            "SECRET_KEY": SECRET_KEY,
            "DJANGO_SUPERUSER_USERNAME": "admin",
            "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
            "GATEWAY_AUTH_CACHE_SECONDS": "1",
            "GATEWAY_SSE_KEEPALIVE": "2",
            "GATEWAY_SCHEDULER": "off",
            "LOG_LEVEL": "WARNING",
        }
        out = LiveGateway(url="", token="", env=env).manage(
            "shell", "-c", SETUP_SCRIPT.format(upstream=upstream.url, server=SERVER)
        )
        token = out.strip().splitlines()[-1]
        a, b = (Replica(name, free_port(), env, token, state / f"replica-{name}.log") for name in ("A", "B"))
        stack.callback(stop_all, [a, b], 5)
        for replica in (a, b):
            replica.spawn()
        for replica in (a, b):
            replica.wait_until_up()
        nginx = stack.enter_context(running_nginx(state / "nginx", a.port, b.port))
        yield Cluster(a=a, b=b, nginx=nginx, redis=redis, upstream=upstream, token=token)


@pytest.fixture(autouse=True)
def _everything_up(cluster: Cluster) -> None:
    """Every test starts with Redis, A and B up (a test that failed before starting one again)."""
    if not cluster.redis.running:
        cluster.redis.start()
    for replica in cluster.replicas:
        replica.start()


def headers(cluster: Cluster, session_id: str | None, **extra: str) -> dict[str, str]:
    base = {"Authorization": f"Bearer {cluster.token}", "Accept": ACCEPT, "Content-Type": "application/json"}
    if session_id:
        base |= {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": SESSION_VERSION}
    return base | extra


# -- fault 2: a replica killed mid-session -----------------------------------------------------------------------


async def test_a_replica_killed_mid_session_leaves_the_session_to_the_other(cluster: Cluster):
    """A session begun on A, which is then SIGKILLed: the same session lists and calls on B and through nginx."""
    async with http_client() as http:
        on_a = McpClient(http, cluster.endpoint(cluster.a.url), cluster.token)
        await on_a.initialize()
        before = await on_a.request("tools/list")
        names = {tool["name"] for tool in before.response["result"]["tools"]}
        assert "echo" in names, names
        await asyncio.to_thread(cluster.kill, cluster.a)
        for base in (cluster.b.url, cluster.nginx.url):
            client = McpClient(http, cluster.endpoint(base), cluster.token)
            client.session_id = on_a.session_id
            listed = await client.request("tools/list", timeout=WAIT)
            assert {tool["name"] for tool in listed.response["result"]["tools"]} == names, listed
            echoed = await client.call("echo", {"message": f"via {base}"}, timeout=WAIT)
            assert echoed.text() == f"via {base}", echoed


async def test_a_question_pending_on_a_killed_replica_fails_cleanly(cluster: Cluster):
    """tools/call on A asks the client something (elicitation/create, relayed from the upstream); A is SIGKILLed
    before the client answers. The call's stream ends at once; resuming it on B (GET + Last-Event-ID) ends
    within WAIT with a JSON-RPC error for the call instead of waiting for ever; the client's late answer,
    POSTed to B, is taken without error; and the session goes on on B."""
    a, b = cluster.endpoint(cluster.a.url), cluster.endpoint(cluster.b.url)
    async with http_client() as http:
        client = McpClient(http, a, cluster.token)
        await client.initialize(ELICITATION)
        call = message("tools/call", {"name": "test_elicitation", "arguments": {"message": "Who are you?"}}, "ask")
        async with http.stream(
            "POST", a, headers=headers(cluster, client.session_id), content=json.dumps(call)
        ) as sent:
            assert sent.status_code == 200
            stream = SseReader(sent)
            try:
                question = await stream.until(
                    lambda m: m.get("method") == "elicitation/create", "elicitation/create", WAIT
                )
                resume_from = stream.last_id
                assert resume_from, "the call's stream carries event ids"
                killed = time.monotonic()
                await asyncio.to_thread(cluster.kill, cluster.a)
                assert await stream.ended(WAIT), "the call's stream did not end when A was killed"
            finally:
                stream.task.cancel()
        assert time.monotonic() - killed < WAIT

        resume = headers(cluster, client.session_id, **{"Last-Event-ID": resume_from, "Accept": "text/event-stream"})
        started = time.monotonic()
        async with http.stream("GET", b, headers=resume) as resumed:
            assert resumed.status_code == 200, await resumed.aread()
            reader = SseReader(resumed)
            try:
                answer = await reader.until(lambda m: m.get("id") == "ask", "an answer for the call", WAIT)
            finally:
                reader.task.cancel()
        assert answer["error"]["code"] == -32000, answer
        assert "replica" in answer["error"]["message"], answer
        assert time.monotonic() - started < WAIT

        late = {"jsonrpc": "2.0", "id": question["id"], "result": USER}
        posted = await http.post(b, headers=headers(cluster, client.session_id), content=json.dumps(late))
        assert posted.status_code == 202, posted.text

        on_b = McpClient(http, b, cluster.token)
        on_b.session_id = client.session_id
        echoed = await on_b.call("echo", {"message": "still here"}, timeout=WAIT)
        assert echoed.text() == "still here", echoed


# -- fault 3: Redis restarted ------------------------------------------------------------------------------------


async def answered_elsewhere(cluster: Cluster, http: Any, asker: str, answerer: str, session_id: str | None) -> None:
    """tools/call test_elicitation POSTed to ``asker``; the client's answer to its question POSTed to ``answerer``;
    the call's result must come back on the first stream within WAIT."""
    call = message("tools/call", {"name": "test_elicitation", "arguments": {"message": "Who are you?"}}, "ask")
    async with http.stream("POST", asker, headers=headers(cluster, session_id), content=json.dumps(call)) as sent:
        stream = SseReader(sent)
        try:
            question = await stream.until(lambda m: m.get("method") == "elicitation/create", "the question", WAIT)
            reply = {"jsonrpc": "2.0", "id": question["id"], "result": USER}
            posted = await http.post(answerer, headers=headers(cluster, session_id), content=json.dumps(reply))
            assert posted.status_code == 202, posted.text
            answer = await stream.until(lambda m: m.get("id") == "ask", "the call's answer", WAIT)
        finally:
            stream.task.cancel()
    assert answer["result"]["content"][0]["text"] == USER_TEXT, answer


RECOVERY = 15.0  # seconds after Redis is back within which both replicas serve sessions again


async def eventually_ok(attempt, what: str, timeout: float = RECOVERY):
    """``attempt()`` until it returns without an AssertionError, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except AssertionError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout:g} s: {exc}") from None
        await asyncio.sleep(0.25)


async def test_a_redis_restart_fails_sessions_clearly_keeps_the_catalog_and_the_replicas_reconnect(cluster: Cluster):
    """Redis (kept nothing on disk) is stopped and started again on the same port. While it is down, a session's
    requests and new sessions get 503 with a JSON-RPC error saying the session store is unreachable, within WAIT.
    Once it is back, empty: the old session gets 404 (the client starts a new one); new sessions list the same
    catalog (PostgreSQL's) and call through both replicas; and the replicas' channel layer works again without a
    restart: an elicitation asked on A is answered through B, and a tool added through A is listed by B."""
    a, b = cluster.endpoint(cluster.a.url), cluster.endpoint(cluster.b.url)
    async with http_client() as http:
        old = McpClient(http, cluster.endpoint(cluster.nginx.url), cluster.token)
        await old.initialize()
        listed = await old.request("tools/list")
        names = {tool["name"] for tool in listed.response["result"]["tools"]}

        async def serves(base: str) -> McpClient:
            client = McpClient(http, base, cluster.token)
            await client.initialize(ELICITATION, timeout=WAIT)
            listed = await client.request("tools/list", timeout=WAIT)
            assert listed.response is not None, listed
            assert {tool["name"] for tool in listed.response["result"]["tools"]} == names, listed
            echoed = await client.call("echo", {"message": base}, timeout=WAIT)
            assert echoed.text() == base, echoed
            return client

        for base in (a, b):  # both replicas have joined the mesh: after the restart they must rejoin by themselves
            await serves(base)

        await asyncio.to_thread(cluster.redis.stop)
        try:
            for base in (a, b):
                client = McpClient(http, base, cluster.token)
                client.session_id = old.session_id
                # Served from the replica's own copy of the session, or a JSON-RPC error naming Redis (HTTP 503 when
                # the session itself cannot be read): never a 500, never a hang.
                for during in (
                    await client.request("tools/list", timeout=WAIT),
                    await client.call("echo", {"message": "during"}, timeout=WAIT),
                ):
                    assert during.status in (200, 503), during
                    assert during.response is not None, during
                    if during.error is not None:
                        assert "(Redis) cannot be reached" in during.error["message"], during
                fresh = McpClient(http, base, cluster.token)
                refused = await fresh.post(message("initialize", INIT, 1), timeout=WAIT)
                assert refused.status == 503, refused
                assert "(Redis) cannot be reached" in refused.error["message"], refused
        finally:
            await asyncio.to_thread(cluster.redis.start)

        async def old_session_is_gone() -> None:
            answer = await old.request("tools/list", timeout=WAIT)
            assert answer.status == 404, answer

        await eventually_ok(old_session_is_gone, "the old session after the restart")

        on_b = await eventually_ok(lambda: serves(b), "B after the restart")
        on_a = await eventually_ok(lambda: serves(a), "A after the restart")

        # A question asked on one replica, answered through the other: the mesh carries the answer over the
        # restarted Redis, so each replica's channel has been subscribed again.
        for asker, answerer, client in ((a, b, on_a), (b, a, on_b)):
            await answered_elsewhere(cluster, http, asker, answerer, client.session_id)

        # A catalog change made through A reaches B over the layer (B's version poll would take 30 s).
        status, body = await asyncio.to_thread(
            cluster.a.api, "POST", "/api/tools", {"name": "after_redis", "gateway": "fx"}
        )
        assert status == 201, (status, body)

        async def listed_on_b() -> None:
            listed = await on_b.request("tools/list", timeout=WAIT)
            assert "after_redis" in {tool["name"] for tool in listed.response["result"]["tools"]}, listed

        await eventually_ok(listed_on_b, "the new tool on B", timeout=5)
