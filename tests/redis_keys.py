"""Redis for tests that share nothing: every key (and channel-layer name) a test run makes starts with the run's
own prefix, ``GATEWAY_REDIS_PREFIX`` of gateway_project/test_settings.py (``mcpgw-test-<pid>-<random>``), and a
run deletes only keys under it: never FLUSHDB, never another database.

A test that starts gateway processes on Redis gives them a prefix of their own under the run's
(``scoped_prefix``), so they hear nothing of this process or of other tests, and deletes its keys when done;
tests/conftest.py deletes whatever is left under the run's prefix at the end of the session.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator


def run_prefix() -> str:
    from django.conf import settings

    return str(settings.GATEWAY_REDIS_PREFIX)


def new_prefix(label: str) -> str:
    """A prefix under the run's that no other test of the run has: ``<run>-<label>-<random>``."""
    return f"{run_prefix()}-{label}-{secrets.token_hex(4)}"


def delete_keys(url: str, prefix: str) -> int:
    """Delete the keys a gateway with GATEWAY_REDIS_PREFIX=``prefix`` made (``<prefix>:...``; the channel layer's
    ``<prefix>-db<N>:`` names are pub/sub channels, not keys), nothing else; how many there were."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
    try:
        # A prefix of this run (or of one of its tests) also covers the prefixes made under it with new_prefix().
        deleted = 0
        for pattern in (f"{prefix}:*", f"{prefix}-*"):
            batch: list[bytes] = []
            for key in client.scan_iter(match=pattern, count=500):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += int(client.delete(*batch))
                    batch = []
            if batch:
                deleted += int(client.delete(*batch))
        return deleted
    finally:
        client.close()


@contextlib.contextmanager
def scoped_prefix(url: str, label: str) -> Iterator[str]:
    """A new prefix under the run's (``new_prefix``) for the gateways a test starts on ``url``; their keys are
    deleted afterwards."""
    prefix = new_prefix(label)
    try:
        yield prefix
    finally:
        with contextlib.suppress(Exception):  # a Redis that went away must not hide the test's own failure
            delete_keys(url, prefix)
