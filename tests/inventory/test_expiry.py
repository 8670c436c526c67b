"""Expiry: the beat task, the command, the extend policy, listeners, parallel sweeps, invariants."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from inventory import hooks
from inventory.models import Product, Reservation, Stock
from inventory.services import (
    ReserveLine,
    reservation_reserve,
    reservations_for_holder,
    reservations_release_expired,
)
from inventory.tasks import release_expired_reservations

_skus = itertools.count(1)


def make_product(on_hand: int = 100) -> Product:
    product = Product.objects.create(sku=f"INV-E-{next(_skus):05d}", name="Thing", price=500)
    Stock.objects.create(product=product, on_hand=on_hand)
    return product


def expire_now(*holders: str) -> None:
    """Age holds as if their TTL had run out (the test's stand-in for waiting 15 minutes)."""
    Reservation.objects.filter(holder__in=holders).update(expires_at=timezone.now() - timedelta(seconds=1))


@pytest.fixture
def expired_calls():
    calls: list[str] = []
    listener = hooks.register_expired_listener(calls.append)
    yield calls
    hooks.unregister(listener)


@pytest.mark.django_db
def test_migration_created_the_beat_schedule(settings):
    task = PeriodicTask.objects.get(task="inventory.tasks.release_expired_reservations")
    assert task.enabled
    assert (task.interval.every, task.interval.period) == (settings.CARTFLOW_RELEASE_INTERVAL_SECONDS, "seconds")


@pytest.mark.django_db
def test_task_expires_past_holds_and_tells_the_listener(expired_calls):
    p = make_product(10)
    reservation_reserve(lines=[ReserveLine(p.id, 3)], holder="co_old")
    reservation_reserve(lines=[ReserveLine(p.id, 2)], holder="co_fresh")
    expire_now("co_old")

    assert release_expired_reservations() == 1
    assert expired_calls == ["co_old"]
    assert [i.status for i in reservations_for_holder(holder="co_old")] == ["EXPIRED"]
    assert [i.status for i in reservations_for_holder(holder="co_fresh")] == ["HELD"]
    assert Stock.objects.get(product=p).reserved == 2
    assert release_expired_reservations() == 0
    assert expired_calls == ["co_old"]
    call_command("check_invariants")


@pytest.mark.django_db
def test_command_releases_expired_holds_and_says_which(capsys, expired_calls):
    p = make_product(10)
    for holder in ("co_a", "co_b"):
        reservation_reserve(lines=[ReserveLine(p.id, 1)], holder=holder)
    expire_now("co_a", "co_b")
    call_command("release_expired_reservations", batch_size=1)
    out = capsys.readouterr().out
    assert "expired co_a" in out and "expired co_b" in out and "released 2 expired" in out
    assert sorted(expired_calls) == ["co_a", "co_b"]
    assert Stock.objects.get(product=p).reserved == 0


@pytest.mark.django_db
def test_extend_policy_keeps_a_hold_whose_checkout_is_charging(settings, expired_calls):
    settings.CARTFLOW_RESERVATION_TTL_SECONDS = 600
    p = make_product(10)
    reservation_reserve(lines=[ReserveLine(p.id, 2)], holder="co_3ds")
    reservation_reserve(lines=[ReserveLine(p.id, 1)], holder="co_idle")
    expire_now("co_3ds", "co_idle")
    policy = hooks.register_extend_policy(lambda holder: holder == "co_3ds")
    try:
        assert reservations_release_expired() == ["co_idle"]
    finally:
        hooks.unregister(policy)
    [held] = reservations_for_holder(holder="co_3ds")
    assert held.status == "HELD"
    assert timedelta(seconds=590) < held.expires_at - timezone.now() <= timedelta(seconds=600)
    assert expired_calls == ["co_idle"]
    assert Stock.objects.get(product=p).reserved == 2


@pytest.mark.django_db
def test_a_failing_listener_or_policy_does_not_stop_the_sweep(expired_calls):
    def broken(holder: str) -> bool:
        raise RuntimeError("boom")

    hooks.register_extend_policy(broken)
    hooks.register_expired_listener(broken)
    try:
        p = make_product(10)
        reservation_reserve(lines=[ReserveLine(p.id, 1)], holder="co_z")
        expire_now("co_z")
        assert reservations_release_expired() == ["co_z"]
    finally:
        hooks.unregister(broken)
    assert expired_calls == ["co_z"]


@pytest.mark.django_db
def test_invariants_catch_a_stale_hold_and_a_drifted_counter(settings):
    settings.CARTFLOW_RELEASE_INTERVAL_SECONDS = 60
    p = make_product(10)
    reservation_reserve(lines=[ReserveLine(p.id, 2)], holder="co_stale")
    call_command("check_invariants")
    Reservation.objects.filter(holder="co_stale").update(expires_at=timezone.now() - timedelta(seconds=121))
    with pytest.raises(CommandError):
        call_command("check_invariants")
    reservations_release_expired()
    call_command("check_invariants")
    Stock.objects.filter(product=p).update(reserved=1)
    with pytest.raises(CommandError):
        call_command("check_invariants")


@pytest.mark.django_db(transaction=True)
def test_two_workers_sweeping_at_once_expire_each_hold_once(expired_calls):
    products = [make_product(1000) for _ in range(3)]
    holders = [f"co_par_{i:03d}" for i in range(60)]
    for i, holder in enumerate(holders):
        reservation_reserve(
            lines=[ReserveLine(products[i % 3].id, 1), ReserveLine(products[(i + 1) % 3].id, 2)], holder=holder
        )
    expire_now(*holders)
    barrier = threading.Barrier(2)
    found: list[list[str]] = [[], []]

    def sweep(i: int) -> None:
        try:
            barrier.wait()
            found[i] = reservations_release_expired(batch_size=7)
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(found[0] + found[1]) == holders  # each holder expired by exactly one worker
    assert Counter(expired_calls) == dict.fromkeys(holders, 1)
    assert set(Reservation.objects.values_list("status", flat=True)) == {"EXPIRED"}
    assert list(Stock.objects.values_list("reserved", flat=True)) == [0, 0, 0]
    call_command("check_invariants")
