"""PostgreSQL connections give up after connect_timeout (5 s unless DATABASE_URL says otherwise): a server that
does not answer (a partition drops packets) fails a request with 503 instead of holding it until TCP gives up
(issue #16, fault 4; live in tests/faults/test_postgres_outage.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.live_gateway import ROOT


def database_options(url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"DATABASE_URL": url, "SECRET_KEY": "k" * 50}
    code = (
        "import json; from gateway_project import settings; print(json.dumps(settings.DATABASES['default']['OPTIONS']))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("url", "timeout"),
    [
        ("postgres://gw@db.example:5432/gateway", 5),
        ("postgres://gw@db.example:5432/gateway?connect_timeout=12", 12),
    ],
)
def test_postgresql_connections_have_a_connect_timeout(url, timeout):
    assert database_options(url)["connect_timeout"] == timeout
