"""The supervised stdio servers' state, as the serving processes report it (docs/federation.md).

Each report lands in ``Gateway.process_state`` under its instance (host, gateway process, which process
of the gateway). Reports of gateway processes on this host that no longer run are dropped then: nobody
else would ever say they stopped.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from asgiref.sync import sync_to_async

logger = logging.getLogger(__name__)


def _gone(state: dict[str, Any]) -> bool:
    """A report of a gateway process of this host that is no longer running."""
    pid = state.get("gateway_pid")
    if state.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _record(gateway_name: str, state: dict[str, Any]) -> None:
    from django.db import connection

    from registry.process_state import gateway_process_state_record

    try:
        if not gateway_process_state_record(name=gateway_name, state=state, stale=_gone):
            logger.debug("process state of unknown gateway %s not recorded", gateway_name)
    finally:
        connection.close()  # a worker thread: do not keep a connection per pool thread


async def record_process_state(gateway_name: str, state: dict[str, Any]) -> None:
    """hooks.upstream_process_changed receiver: keep the last report on the gateway, in a worker thread."""
    if "instance" not in state:
        return
    await sync_to_async(_record, thread_sensitive=False)(gateway_name, state)
