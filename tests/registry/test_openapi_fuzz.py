"""schemathesis against the REST API as a new user would run it: `schemathesis run --checks all` on
/api/openapi.json, every operation, authenticated, in all its phases (examples, coverage, fuzzing, stateful),
against a live gateway served as `make run` serves it (gateway_project.daphne_server) with its own SQLite.
It passes when schemathesis finds nothing: no server error, and an OpenAPI document that tells the truth
(statuses, content types, response bodies, which requests are valid). The one allowance, and why, is in
tests/registry/schemathesis.toml.

`make test` runs a bounded profile (FUZZ_EXAMPLES=10 per operation and phase). The longer one, by hand:

    FUZZ_EXAMPLES=300 FUZZ_SEED=random .venv/bin/pytest -p no:cacheprovider tests/registry/test_openapi_fuzz.py

`make test` uses a fixed seed; FUZZ_SEED=random draws new cases, FUZZ_SEED=<n> replays a run (a failure names
its seed). FUZZ_TIMEOUT bounds a run in seconds (default 1200).
The fuzzer's requests reach nothing beyond loopback and start no program (tests/registry/openapi_fuzz_hooks.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_gateway import ROOT, LiveGateway, start_live_gateway

CONFIG = Path(__file__).with_name("schemathesis.toml")
# `make test` draws the same cases every run, so a failure there is the code's, not the draw's; FUZZ_SEED=random
# (or any number) explores further.
DEFAULT_SEED = "16"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port held bound and never listening: a connection to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[LiveGateway]:
    """The gateway as `make run` serves it, with an empty PATH (no program a fuzzed stdio gateway or CLI tool
    names can start) and no access to private addresses (GATEWAY_OUTBOUND_ALLOW_PRIVATE off, the default)."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    with start_live_gateway(
        tmp_path,
        server="gateway_project.daphne_server",
        server_env={"PATH": str(empty)},
        GATEWAY_AUTH_CACHE_SECONDS=None,  # the setting's default, as `make run` has it
    ) as gateway:
        yield gateway


def _report(output: str) -> str:
    """schemathesis's failures and summary (its whole output can run to thousands of lines)."""
    start = output.find("=== FAILURES")
    return output[start:] if start >= 0 else output[-8000:]


def test_schemathesis_finds_nothing(gateway: LiveGateway, closed_port: int, tmp_path: Path) -> None:
    """Every operation, every check, every phase: no server error, and the document tells the truth."""
    examples = os.environ.get("FUZZ_EXAMPLES", "10")
    seed = os.environ.get("FUZZ_SEED", DEFAULT_SEED)
    if seed == "random":
        seed = str(int.from_bytes(os.urandom(4)))
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--no-color",
        "--config-file",
        str(CONFIG),
        "run",
        f"{gateway.url}/api/openapi.json",
        "--header",
        f"Authorization: Bearer {gateway.token}",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        examples,
        "--seed",
        seed,
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.registry.openapi_fuzz_hooks",
        "FUZZ_CLOSED_PORT": str(closed_port),
        "PYTHONPATH": str(ROOT),
    }
    try:
        run = subprocess.run(
            command,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=int(os.environ.get("FUZZ_TIMEOUT", "1200")),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        pytest.fail(f"schemathesis did not finish in time (seed {seed}):\n{output[-8000:]}")
    assert run.returncode == 0, (
        f"schemathesis found failures (FUZZ_SEED={seed} replays this run):\n{_report(run.stdout)}\n{run.stderr[-2000:]}"
    )
    log = gateway.log.read_text() if gateway.log else ""
    where = log.find(" ERROR ")
    assert where < 0, f"the gateway logged an error (FUZZ_SEED={seed}):\n{log[max(0, where - 300) : where + 6000]}"
