"""A gateway's lease: one holder at a time, taken back by its holder, free again once it runs out."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from registry.leases import gateway_lease_acquire, gateway_lease_release
from registry.models import Gateway
from tests.factories import GatewayFactory

pytestmark = pytest.mark.django_db


def test_a_free_lease_is_taken_and_a_held_one_refused():
    gateway = GatewayFactory()
    assert gateway_lease_acquire(gateway_id=gateway.pk, owner="a", seconds=60)
    assert not gateway_lease_acquire(gateway_id=gateway.pk, owner="b", seconds=60)
    gateway.refresh_from_db()
    assert gateway.lease_owner == "a"
    assert gateway.lease_until > timezone.now() + timedelta(seconds=50)


def test_the_holder_may_take_it_again_and_extend_it():
    gateway = GatewayFactory()
    assert gateway_lease_acquire(gateway_id=gateway.pk, owner="a", seconds=1)
    assert gateway_lease_acquire(gateway_id=gateway.pk, owner="a", seconds=600)
    gateway.refresh_from_db()
    assert gateway.lease_until > timezone.now() + timedelta(seconds=500)


def test_an_expired_lease_goes_to_the_next_worker():
    """A crashed worker never releases: its lease runs out."""
    gateway = GatewayFactory()
    Gateway.objects.filter(pk=gateway.pk).update(
        lease_owner="crashed", lease_until=timezone.now() - timedelta(seconds=1)
    )
    assert gateway_lease_acquire(gateway_id=gateway.pk, owner="b", seconds=60)
    gateway.refresh_from_db()
    assert gateway.lease_owner == "b"


def test_release_frees_it_only_for_its_holder():
    gateway = GatewayFactory()
    assert gateway_lease_acquire(gateway_id=gateway.pk, owner="a", seconds=60)
    gateway_lease_release(gateway_id=gateway.pk, owner="b")  # not b's: nothing happens
    assert not gateway_lease_acquire(gateway_id=gateway.pk, owner="b", seconds=60)
    gateway_lease_release(gateway_id=gateway.pk, owner="a")
    gateway.refresh_from_db()
    assert (gateway.lease_owner, gateway.lease_until) == ("", None)
    assert gateway_lease_acquire(gateway_id=gateway.pk, owner="b", seconds=60)


def test_a_missing_gateway_has_no_lease_to_take():
    assert not gateway_lease_acquire(gateway_id=987654, owner="a", seconds=60)
    gateway_lease_release(gateway_id=987654, owner="a")  # no error


def test_a_long_owner_is_cut_to_the_column_and_still_recognised():
    gateway = GatewayFactory()
    owner = "host-" + "x" * 100
    assert gateway_lease_acquire(gateway_id=gateway.pk, owner=owner, seconds=60)
    assert gateway_lease_acquire(gateway_id=gateway.pk, owner=owner, seconds=60)
    gateway_lease_release(gateway_id=gateway.pk, owner=owner)
    gateway.refresh_from_db()
    assert gateway.lease_owner == ""


@pytest.mark.django_db(transaction=True)
def test_threads_racing_for_one_lease_get_exactly_one_winner():
    gateway = GatewayFactory()
    start = threading.Barrier(6)
    won: list[str] = []

    def race(owner: str) -> None:
        try:
            start.wait(10)
            if gateway_lease_acquire(gateway_id=gateway.pk, owner=owner, seconds=60):
                won.append(owner)
        finally:
            connection.close()

    threads = [threading.Thread(target=race, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(won) == 1
    gateway.refresh_from_db()
    assert gateway.lease_owner == won[0]
