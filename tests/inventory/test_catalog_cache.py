"""The catalog's two cache layers and the generation that guards them (inventory/selectors.py): another
process's change is seen by the next lookup, and within one HTTP request the generation is read once."""

from __future__ import annotations

import threading
import time

import pytest
import redis as redis_lib
from django.conf import settings
from django.core.cache import cache

from inventory.models import Product
from inventory.selectors import (
    GENERATION_KEY,
    generation_memo_close,
    generation_memo_open,
    product_cache_invalidate,
    product_info_get,
)
from tests.support.saga import guest_with_cart, make_product

pytestmark = pytest.mark.django_db


def _changed_elsewhere(product: Product, *, price: int) -> None:
    """What another process's price change leaves behind: the row, no shared copy, a new generation. This
    process's own copies are not told (``product_cache_invalidate`` would drop them)."""
    Product.objects.filter(pk=product.pk).update(price=price)
    other = redis_lib.Redis.from_url(settings.REDIS_URL)
    other.delete(cache.make_key(f"catalog:product:{product.pk}"))
    other.set(cache.make_key(GENERATION_KEY), f"elsewhere-{price}")
    other.close()


def test_outside_a_request_every_lookup_sees_another_process_change():
    product = make_product(price=1000)
    assert product_info_get(product_id=product.pk).price == 1000
    _changed_elsewhere(product, price=1100)
    assert product_info_get(product_id=product.pk).price == 1100


def test_within_a_request_the_generation_is_read_once_and_the_next_request_reads_it_again():
    product = make_product(price=1000)
    # What request_started / request_finished call (inventory/apps.py; the start test below goes through
    # them). Sent here as signals they would also close the test's database connection.
    generation_memo_open()
    try:
        assert product_info_get(product_id=product.pk).price == 1000
        _changed_elsewhere(product, price=1200)
        assert product_info_get(product_id=product.pk).price == 1000  # one snapshot per request
        product_cache_invalidate(product_id=product.pk)  # a change made in this request is seen at once
        assert product_info_get(product_id=product.pk).price == 1200
        _changed_elsewhere(product, price=1300)
        assert product_info_get(product_id=product.pk).price == 1200
    finally:
        generation_memo_close()
    assert product_info_get(product_id=product.pk).price == 1300


def _generation_reads(during) -> int:  # noqa: ANN001 - a callable
    """GETs of the generation key that Redis saw while ``during()`` ran (MONITOR, a second connection)."""
    key = cache.make_key(GENERATION_KEY)
    seen: list[str] = []
    ready, done = threading.Event(), threading.Event()

    def watch() -> None:
        client = redis_lib.Redis.from_url(settings.REDIS_URL)
        with client.monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                seen.append(command["command"])
                if command["command"] == "ECHO monitor-stop":
                    break
        client.close()
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    assert ready.wait(5)
    time.sleep(0.1)  # MONITOR is registered once the server has answered it
    during()
    redis_lib.Redis.from_url(settings.REDIS_URL).echo("monitor-stop")
    assert done.wait(5)
    return sum(1 for line in seen if line == f"GET {key}")


def test_a_checkout_start_reads_the_catalog_generation_once():
    product = make_product(price=1000)
    client = guest_with_cart((product, 1))
    response_codes: list[int] = []
    reads = _generation_reads(lambda: response_codes.append(client.post("/api/checkout/start").status_code))
    assert response_codes == [201]
    assert reads == 1
