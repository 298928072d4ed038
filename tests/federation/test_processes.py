"""Recording what the serving processes report about their stdio children in Gateway.process_state."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from asgiref.sync import sync_to_async

from federation.processes import record_process_state
from registry import events
from registry.models import Gateway

pytestmark = pytest.mark.django_db(transaction=True)


def report(state: str, label: str = "shared", *, gateway_pid: int | None = None, **extra: object) -> dict[str, object]:
    host, pid = socket.gethostname(), gateway_pid or os.getpid()
    return {
        "state": state,
        "pid": 4321,
        "restarts": 0,
        "since": "2026-01-01T00:00:00+00:00",
        "last_exit": None,
        "host": host,
        "gateway_pid": pid,
        "process": label,
        "instance": f"{host}:{pid}:{label}",
        **extra,
    }


async def test_each_instance_keeps_its_last_state_without_a_catalog_bump() -> None:
    """Reports land under their instance; a newer one replaces the older; the catalog version stays."""
    gateway = await Gateway.objects.acreate(name="files", transport="stdio", command="files-server")
    version = await sync_to_async(events.catalog_version)()
    await record_process_state("files", report("starting"))
    await record_process_state("files", report("running"))
    await record_process_state("files", report("running", "user alice"))
    await gateway.arefresh_from_db()
    states = gateway.process_state
    assert {value["process"]: value["state"] for value in states.values()} == {
        "shared": "running",
        "user alice": "running",
    }
    assert await sync_to_async(events.catalog_version)() == version


async def test_reports_of_gateway_processes_gone_from_this_host_are_dropped() -> None:
    """An entry left by a gateway process of this host that no longer runs goes with the next report."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    await Gateway.objects.acreate(name="files", transport="stdio", command="files-server")
    await record_process_state("files", report("running", gateway_pid=dead_pid))
    await record_process_state("files", report("running"))
    gateway = await Gateway.objects.aget(name="files")
    assert [value["gateway_pid"] for value in gateway.process_state.values()] == [os.getpid()]


async def test_unknown_gateways_and_reports_without_instance_are_ignored() -> None:
    """No gateway of that name (removed meanwhile), or no instance: nothing is written, nothing fails."""
    other = await Gateway.objects.acreate(name="other", transport="stdio", command="x")
    await record_process_state("missing", report("running"))
    await record_process_state("other", {"state": "running"})
    await other.arefresh_from_db()
    assert other.process_state == {}
