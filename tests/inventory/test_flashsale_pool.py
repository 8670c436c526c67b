"""The flash-sale token pool against the real Redis and PostgreSQL: take/return/consume, start/stop, sweeper."""

from __future__ import annotations

import time

import pytest
from django.core.management import call_command
from django.urls import reverse

from inventory import flashsale, flashsale_keys
from inventory.errors import FlashSaleBusy, SoldOut
from inventory.flashsale import (
    flash_holders,
    flash_pool_state,
    flash_pool_sweep,
    flash_sale_start,
    flash_sale_stop,
    flash_stats,
    flash_tokens_consume,
    flash_tokens_return,
    flash_tokens_take,
)
from inventory.models import Product, Reservation
from inventory.selectors import product_info_get
from inventory.services import ReserveLine, reservation_commit, reservation_release, reservation_reserve

pytestmark = pytest.mark.django_db


def free(pid: int) -> int:
    state = flash_pool_state(product_id=pid)
    assert state is not None
    return state.free


def test_start_opens_a_pool_of_the_available_stock_and_flags_the_product(make_product):
    p = make_product(on_hand=10, reserved=3)
    assert product_info_get(product_id=p.id).flash_sale is False  # cached now
    state = flash_sale_start(product_id=p.id)
    assert (state.free, state.inflight) == (7, 0)
    assert Product.objects.get(id=p.id).flash_sale is True
    assert product_info_get(product_id=p.id).flash_sale is True  # the cache was invalidated
    flash_sale_stop(product_id=p.id)
    assert flash_pool_state(product_id=p.id) is None
    assert Product.objects.get(id=p.id).flash_sale is False


def test_take_is_all_or_nothing_across_lines_and_says_sold_out_or_busy(make_product):
    a, b = make_product(on_hand=3), make_product(on_hand=1)
    flash_sale_start(product_id=a.id)
    flash_sale_start(product_id=b.id)
    assert flash_tokens_take(holder="co1", lines=[(a.id, 2), (b.id, 1)]) is True
    # b has no free token, but co1 holds one in flight: busy, and nothing of a was taken.
    with pytest.raises(FlashSaleBusy) as busy:
        flash_tokens_take(holder="co2", lines=[(a.id, 1), (b.id, 1)])
    assert busy.value.extensions == {"productId": b.id} and busy.value.retry_after == 2
    assert (free(a.id), free(b.id)) == (1, 0)
    # Asking for more than free + in flight: sold out.
    with pytest.raises(SoldOut) as sold:
        flash_tokens_take(holder="co3", lines=[(a.id, 4)])
    assert sold.value.extensions == {"productId": a.id}
    # Lines of one product are summed; the same holder taking again is a no-op.
    assert flash_tokens_take(holder="co4", lines=[(a.id, 1)]) is True
    assert flash_tokens_take(holder="co4", lines=[(a.id, 1)]) is True
    assert free(a.id) == 0
    assert flash_stats()["admitted"] == 2 and flash_stats()["busy"] == 1 and flash_stats()["sold_out"] == 1


def test_return_gives_tokens_back_once_and_consume_keeps_them_sold(make_product):
    p = make_product(on_hand=2)
    flash_sale_start(product_id=p.id)
    flash_tokens_take(holder="r", lines=[(p.id, 1)])
    flash_tokens_take(holder="c", lines=[(p.id, 1)])
    with pytest.raises(SoldOut):  # nothing free, nothing that could come back beyond what is held
        flash_tokens_take(holder="x", lines=[(p.id, 3)])
    assert flash_tokens_return(holder="r") == 1
    assert flash_tokens_return(holder="r") == 0
    assert flash_tokens_consume(holder="c") == 1
    assert flash_tokens_consume(holder="c") == 0
    state = flash_pool_state(product_id=p.id)
    assert (state.free, state.inflight) == (1, 0)
    assert flash_tokens_take(holder="later", lines=[(p.id, 1)]) is True  # the returned token is reused
    with pytest.raises(FlashSaleBusy):  # "later" may still fail and give it back
        flash_tokens_take(holder="late", lines=[(p.id, 1)])
    flash_tokens_consume(holder="later")
    with pytest.raises(SoldOut):
        flash_tokens_take(holder="late", lines=[(p.id, 1)])


def test_products_outside_flash_sale_take_no_token(make_product):
    plain, hot = make_product(on_hand=5), make_product(on_hand=1)
    assert flash_tokens_take(holder="n", lines=[(plain.id, 2)]) is False
    flash_sale_start(product_id=hot.id)
    assert flash_tokens_take(holder="m", lines=[(plain.id, 2), (hot.id, 1)]) is True
    assert [h.lines for h in flash_holders()] == [{hot.id: 1}]


def test_a_pool_lost_with_redis_is_reopened_by_the_next_take(make_product, redis_client):
    p = make_product(on_hand=4, reserved=1)
    flash_sale_start(product_id=p.id)
    redis_client.flushdb()  # what a restart without persistence leaves
    assert flash_tokens_take(holder="after", lines=[(p.id, 1)]) is True
    state = flash_pool_state(product_id=p.id)
    assert (state.free, state.inflight) == (2, 1)


def test_sweeper_settles_holders_from_the_database_and_resyncs_the_pool(make_product):
    p = make_product(on_hand=10)
    flash_sale_start(product_id=p.id)
    for holder in ("held", "committed", "released", "crashed", "young"):
        flash_tokens_take(holder=holder, lines=[(p.id, 1)])
    for holder in ("held", "committed", "released"):
        reservation_reserve(lines=[ReserveLine(p.id, 1)], holder=holder)
    reservation_commit(holder="committed")
    reservation_release(holder="released")
    # "crashed" took its token long ago and never reserved.
    raw = flashsale_keys.redis_client().hget(flashsale_keys.HELD, "crashed")
    flashsale_keys.redis_client().hset(flashsale_keys.HELD, "crashed", raw.replace(b'"at":', b'"at":1,"old":'))
    # The pool drifted (e.g. a lost return): the sweeper sets it from the database.
    flashsale_keys.redis_client().hset(flashsale_keys.FREE, p.id, 0)

    report = flash_pool_sweep()
    assert report.consumed == ["committed"]
    assert sorted(report.returned) == ["crashed", "released"]
    # on_hand 9 (one sold), reserved 1 ("held"); "young" has not reserved yet: 9 - 1 - 1 = 7 free.
    assert report.repaired == {p.id: 7}
    state = flash_pool_state(product_id=p.id)
    assert (state.free, state.inflight) == (7, 2)
    assert sorted(h.holder for h in flash_holders()) == ["held", "young"]
    assert flash_pool_sweep().repaired == {p.id: 7}  # stable


def test_sweeper_reopens_lost_pools_and_closes_stray_ones(make_product, redis_client):
    hot, cold = make_product(on_hand=5, reserved=2), make_product(on_hand=5)
    flash_sale_start(product_id=hot.id)
    flash_sale_start(product_id=cold.id)
    Product.objects.filter(id=cold.id).update(flash_sale=False)  # stopped while Redis was away
    redis_client.delete(flashsale_keys.FREE, flashsale_keys.INFLIGHT)
    flashsale.flash_pool_open(product_id=cold.id, tokens=5)
    report = flash_pool_sweep()
    assert report.reopened == [hot.id] and report.closed == [cold.id]
    assert free(hot.id) == 3 and flash_pool_state(product_id=cold.id) is None


def test_pool_is_never_larger_than_available_stock(make_product):
    p = make_product(on_hand=3)
    flash_sale_start(product_id=p.id)
    flashsale_keys.redis_client().hset(flashsale_keys.FREE, p.id, 50)
    reservation_reserve(lines=[ReserveLine(p.id, 2)], holder="direct")  # a checkout that bypassed the pool
    flash_pool_sweep()
    assert free(p.id) == 1


def test_command_starts_reports_and_stops(make_product, capsys):
    p = make_product(on_hand=6, sku="FS-CMD")
    call_command("flash_sale", "start", "FS-CMD")
    call_command("flash_sale", "status", "FS-CMD")
    call_command("flash_sale", "stop", "FS-CMD")
    out = capsys.readouterr().out
    assert "6 tokens free" in out and "6 free, 0 in flight, 0 queued" in out and "pool closed" in out
    assert flash_pool_state(product_id=p.id) is None


def test_admin_actions_start_and_stop(client, django_user_model, make_product):
    staff = django_user_model.objects.create_superuser(username="ops", password="pw", email="o@example.com")
    client.force_login(staff)
    p = make_product(on_hand=4)
    url = reverse("admin:inventory_product_changelist")
    resp = client.post(url, {"action": "start_flash_sale", "_selected_action": [p.id]}, follow=True)
    assert b"flash sale on, 4 tokens free" in resp.content
    assert free(p.id) == 4 and Product.objects.get(id=p.id).flash_sale
    client.post(url, {"action": "stop_flash_sale", "_selected_action": [p.id]})
    assert flash_pool_state(product_id=p.id) is None


def test_metrics_expose_tokens_in_flight_and_rejections(client, make_product):
    p = make_product(on_hand=1)
    flash_sale_start(product_id=p.id)
    flash_tokens_take(holder="m1", lines=[(p.id, 1)])
    with pytest.raises(FlashSaleBusy):
        flash_tokens_take(holder="m2", lines=[(p.id, 1)])
    body = client.get("/metrics").content.decode()
    assert f'cartflow_flash_tokens_free{{product_id="{p.id}"}} 0.0' in body
    assert f'cartflow_flash_tokens_inflight{{product_id="{p.id}"}} 1.0' in body
    assert 'cartflow_flash_rejections_total{reason="busy"}' in body
    assert 'cartflow_flash_admission_seconds_bucket{le="0.001",outcome="admitted"}' in body


def test_sweep_task_is_scheduled_by_beat():
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="inventory.tasks.flash_pool_sweep")
    assert task.enabled and 30 <= task.interval.every <= 60


def test_stale_holder_timestamp_is_epoch_seconds(make_product):
    p = make_product(on_hand=1)
    flash_sale_start(product_id=p.id)
    flash_tokens_take(holder="t", lines=[(p.id, 1)])
    (hold,) = flash_holders()
    assert abs(hold.at - time.time()) < 5
    assert not Reservation.objects.exists()
