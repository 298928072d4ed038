"""PostgreSQL and Redis for tests that start gateway processes on them (tests/replicas, tests/faults,
tests/deploy): a scratch database of the test's own, dropped afterwards, and a Redis key prefix of its own, whose
keys alone are deleted afterwards, so nothing touches pytest-django's database or anyone else's Redis keys. A
server that does not answer skips the test, saying which test needs what.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.redis_keys import scoped_prefix

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def with_database(url: str, name: str, *, port: int | None = None) -> str:
    """``url`` naming the database ``name`` (and, with ``port``, the server at 127.0.0.1:``port``)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if port is not None:
        netloc = f"{netloc.rpartition('@')[0]}@127.0.0.1:{port}" if "@" in netloc else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, f"/{name}", parts.query, ""))


def postgres_base_url() -> str:
    """DATABASE_URL when it names PostgreSQL, else the local server; pointed at the maintenance database."""
    raw = os.environ.get("DATABASE_URL", "")
    url = raw if urlsplit(raw).scheme in ("postgres", "postgresql", "pgsql") else DEFAULT_DATABASE_URL
    return with_database(url.replace("pgsql://", "postgres://", 1), "postgres")


def redis_url() -> str:
    """REDIS_URL when it names a Redis server, else the local one (its database as given)."""
    raw = os.environ.get("REDIS_URL", "")
    return raw if urlsplit(raw).scheme in ("redis", "rediss") else DEFAULT_REDIS_URL


@contextlib.contextmanager
def scratch_database(server_url: str, label: str, *, who: str) -> Iterator[str]:
    """A new, empty database `mcpgw_<label>_<random>` on the PostgreSQL server of ``server_url`` (its URL),
    created and dropped from the server's maintenance database; skips ``who`` when the server does not answer."""
    import psycopg

    name = f"mcpgw_{label}_{secrets.token_hex(4)}"
    maintenance = with_database(server_url, "postgres")
    try:
        admin = psycopg.connect(maintenance, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        pytest.skip(f"{who} needs PostgreSQL: {maintenance} does not answer ({exc})")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(server_url, name)
        finally:
            # WITH (FORCE) (PostgreSQL 13+) ends the connections a killed gateway may have left behind.
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def require_redis(url: str, *, who: str) -> None:
    """Skip ``who`` unless the Redis server of ``url`` answers."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"{who} needs Redis: {url} does not answer ({exc})")
    finally:
        client.close()


@contextlib.contextmanager
def scratch_redis(url: str, label: str, *, who: str) -> Iterator[str]:
    """A key prefix of the test's own on ``url``'s Redis (for GATEWAY_REDIS_PREFIX, ``scoped_prefix`` with
    ``label``); its keys are deleted afterwards, nothing else."""
    require_redis(url, who=who)
    with scoped_prefix(url, label) as prefix:
        yield prefix
