"""The upstream pool builds each gateway's UpstreamConfig once per catalog snapshot: repeated calls reuse it, a
new snapshot's row (a changed gateway) is built anew at once, and users' own credentials stay each user's."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from tests.transports.test_cache import gateway_row as catalog_row
from transports.protocol import upstream
from transports.protocol import upstream_pool as pool_module
from transports.protocol.catalog import EMPTY_ROWS, Snapshot, build_snapshot
from transports.protocol.upstream.base import UpstreamClient, UpstreamConfig
from transports.protocol.upstream_auth import UpstreamAuth
from transports.protocol.upstream_pool import UpstreamPool


class StubClient(UpstreamClient):
    """Connects at once, in the era its config forces ("auto": the era ``auto_era`` says: a modern upstream that
    may also accept sessions)."""

    auto_era = "modern"

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self._open = False

    async def connect(self) -> dict[str, Any]:
        self._open = True
        self.era = self.auto_era if self.config.era == "auto" else self.config.era
        return {}

    async def request(self, method: str, params: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
        return {}

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        return None

    def set_notification_handler(self, handler: Any) -> None:
        return None

    async def aclose(self) -> None:
        self._open = False

    @property
    def connected(self) -> bool:
        return self._open


def gateway_row(**fields: Any) -> dict[str, Any]:
    """The catalog row of gateway "fx", reached with the gateway's own bearer token."""
    return catalog_row("fx", **{"auth_type": "bearer", "credentials": {"token": "gateway-token"}, **fields})


class Counted:
    """A spy: calls ``wrapped`` and counts the calls."""

    def __init__(self, wrapped: Callable[..., Any]) -> None:
        self.wrapped = wrapped
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.wrapped(*args, **kwargs)


@pytest.fixture
def stub_clients(monkeypatch: pytest.MonkeyPatch) -> list[StubClient]:
    made: list[StubClient] = []

    def create(config: UpstreamConfig) -> StubClient:
        made.append(StubClient(config))
        return made[-1]

    monkeypatch.setattr(upstream, "create_client", create)
    return made


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Counted:
    spy = Counted(pool_module.config_from_row)
    monkeypatch.setattr(pool_module, "config_from_row", spy)
    return spy


@pytest.fixture
def replaces(monkeypatch: pytest.MonkeyPatch) -> Counted:
    spy = Counted(dataclasses.replace)
    monkeypatch.setattr(dataclasses, "replace", spy)
    return spy


def snapshot(version: int, *gateways: dict[str, Any]) -> Snapshot:
    """A snapshot as ``CatalogCache`` builds one for each catalog version, from rows read afresh."""
    return build_snapshot({**EMPTY_ROWS, "version": version, "gateways": copy.deepcopy(list(gateways))})


class Vault:
    """Users' own credentials, by (gateway, user)."""

    def __init__(self, stored: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.stored = stored

    async def load(self, gateway: str, user: str) -> dict[str, Any] | None:
        return self.stored.get((gateway, user))

    async def store(self, gateway: str, user: str, credentials: dict[str, Any]) -> None:
        self.stored[(gateway, user)] = credentials

    def connect_hint(self, gateway: str) -> str:
        return "/accounts/"


async def test_repeated_calls_build_the_config_once_per_snapshot(stub_clients, builds, replaces) -> None:
    """tools/call after tools/call on one snapshot: the gateway's config (and each capability profile's and era's
    variant of it) is built on the first call only, and the same client is reused."""
    row = gateway_row()
    profile = {"elicitation": {"form": {}}}
    pool = UpstreamPool(request_timeout=10.0)
    try:
        first = {
            "shared": await pool.get("fx", row),
            "modern": await pool.get("fx", row, profile, era="modern"),
            "legacy": await pool.get("fx", row, profile, era="legacy"),
        }
        built, replaced = builds.calls, replaces.calls
        assert built == 1
        for _ in range(3):
            assert await pool.get("fx", row) is first["shared"]
            assert await pool.get("fx", row, profile, era="modern") is first["modern"]
            assert await pool.get("fx", row, dict(profile), era="legacy") is first["legacy"]
        assert (builds.calls, replaces.calls) == (built, replaced)
        assert first["legacy"].config.era == "legacy"
        assert first["legacy"].config.client_capabilities == profile
        assert first["shared"].config.headers == {"Authorization": "Bearer gateway-token"}
    finally:
        await pool.aclose()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", "http://127.0.0.1:9/other"),
        ("credentials", {"token": "rotated"}),
        ("auth_type", "headers"),
        ("verify_tls", False),
        ("era", "legacy"),
    ],
)
async def test_a_changed_gateway_row_gives_the_new_config_on_the_next_call(
    stub_clients, builds, field: str, value: Any
) -> None:
    """A catalog change (a new snapshot, with the gateway's new row) takes effect on the very next call: the config
    is built again from the new row and the client is rebuilt with it; the old row is not consulted again."""
    pool = UpstreamPool(request_timeout=10.0)
    try:
        before = snapshot(1, gateway_row())
        old = await pool.get("fx", before.upstreams["fx"])
        assert await pool.get("fx", before.upstreams["fx"]) is old
        after = snapshot(2, gateway_row(**{field: value}))
        new = await pool.get("fx", after.upstreams["fx"])
        assert new is not old
        assert not old.connected
        assert new.config == builds.wrapped(after.upstreams["fx"], request_timeout=10.0)
        assert new.config != old.config
        assert builds.calls == 2
        assert await pool.get("fx", after.upstreams["fx"]) is new
        assert builds.calls == 2
    finally:
        await pool.aclose()


async def test_a_rebuilt_snapshot_with_the_same_settings_keeps_the_client(stub_clients) -> None:
    """Another entry's change rebuilds the snapshot: the unchanged gateway's client stays connected."""
    pool = UpstreamPool(request_timeout=10.0)
    try:
        client = await pool.get("fx", snapshot(1, gateway_row()).upstreams["fx"])
        assert await pool.get("fx", snapshot(2, gateway_row()).upstreams["fx"]) is client
        assert client.connected
    finally:
        await pool.aclose()


async def test_users_own_credentials_never_cross_users(stub_clients, builds) -> None:
    """per_user_credentials: each user's config carries that user's credentials, whatever the order of calls, and
    is built once per user; a user's changed credentials apply on their next call."""
    vault = Vault(
        {
            ("fx", "alice"): {"auth_type": "bearer", "credentials": {"token": "alice-token"}},
            ("fx", "bob"): {"auth_type": "bearer", "credentials": {"token": "bob-token"}},
        }
    )
    row = gateway_row(per_user_credentials=True, auth_type="none", credentials={})
    pool = UpstreamPool(request_timeout=10.0, auth=UpstreamAuth(vault))
    try:
        for _ in range(2):
            for user in ("alice", "bob"):
                client = await pool.get("fx", row, user=user)
                assert client.config.headers == {"Authorization": f"Bearer {user}-token"}
        assert builds.calls == 2
        vault.stored[("fx", "alice")] = {"auth_type": "bearer", "credentials": {"token": "alice-new"}}
        pool.auth.forget("fx", "alice")
        alice = await pool.get("fx", row, user="alice")
        assert alice.config.headers == {"Authorization": "Bearer alice-new"}
        bob = await pool.get("fx", row, user="bob")
        assert bob.config.headers == {"Authorization": "Bearer bob-token"}
        assert builds.calls == 3
    finally:
        await pool.aclose()
