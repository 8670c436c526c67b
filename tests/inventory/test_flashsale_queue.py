"""The flash sale's fair queue through the real endpoints: real Redis, real PostgreSQL, the Stripe emulator."""

from __future__ import annotations

import itertools
import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from inventory.flashsale import flash_pool_state, flash_sale_start
from inventory.flashsale_queue import flash_queue_length
from orders.models import CheckoutSaga
from tests.support.saga import guest_with_cart, invariants_hold, make_product

pytestmark = pytest.mark.django_db(transaction=True)
_addresses = itertools.count(1)


def buyer(product) -> APIClient:  # noqa: ANN001
    """A guest with its own client address (throttles are per client) and a cart holding one unit."""
    n = next(_addresses)
    client = APIClient(REMOTE_ADDR=f"10.9.{n // 256 % 256}.{n % 256}")
    response = client.post("/api/cart/items", {"productId": product.id, "quantity": 1}, format="json")
    assert response.status_code == 201, response.content
    client.credentials(HTTP_X_CART_TOKEN=response.json()["token"])
    return client


def start(client: APIClient, ticket: str | None = None):  # noqa: ANN201
    headers = {"HTTP_FLASH_TICKET": ticket} if ticket else {}
    return client.post("/api/checkout/start", {}, format="json", **headers)


def age(joined: dict, field: str, seconds: float) -> None:
    """What the clock does to a ticket: its ``admitted`` / ``seen`` time (Redis TIME, set by
    inventory/flashsale_queue.py) moves ``seconds`` into the past, instead of the test sleeping across a window."""
    from django_redis import get_redis_connection

    redis = get_redis_connection("default")
    key = "fs:{fs}:ticket:" + joined["ticket"]
    stamp = float(redis.hget(key, field) or 0)
    assert stamp > 0, f"ticket has no {field} time"
    redis.hset(key, field, str(stamp - seconds))


def join(client: APIClient, product) -> dict:  # noqa: ANN001
    response = client.post(f"/api/flash-sales/{product.sku}/queue")
    assert response.status_code == 201, response.content
    return response.json()


def poll(client: APIClient, joined: dict):  # noqa: ANN201
    return client.get(joined["pollUrl"])


def sold_out_for_now(waiting: int):  # noqa: ANN201
    """A one-unit flash-sale product held by a checkout in progress, and ``waiting`` buyers with it in
    their carts (filled before the hold: a cart refuses what is not available). Returns
    ``(product, holder client, its checkout id, waiting clients)``."""
    product = make_product(on_hand=1)
    flash_sale_start(product_id=product.id)
    holder = buyer(product)
    others = [buyer(product) for _ in range(waiting)]
    response = start(holder)
    assert response.status_code == 201, response.content
    return product, holder, response.json()["checkoutId"], others


def test_busy_buyers_get_fifo_positions_and_poll_them(stripe_emulator):
    product, _, _, waiting = sold_out_for_now(3)
    for client in waiting:
        assert start(client).json()["code"] == "flash_sale_busy"
    joined = [join(client, product) for client in waiting]
    assert [j["position"] for j in joined] == [1, 2, 3]
    assert not any(j["admitted"] for j in joined)
    assert len({j["ticket"] for j in joined}) == 3
    assert joined[0]["pollUrl"] == f"/api/flash-sales/{product.sku}/queue/{joined[0]['ticket']}"
    for i, (client, j) in enumerate(zip(waiting, joined, strict=True)):
        body = poll(client, j).json()
        assert (body["position"], body["admitted"]) == (i + 1, False)
        assert body["expiresAt"]


def test_concurrent_joins_get_distinct_contiguous_positions(stripe_emulator):
    product, _, _, clients = sold_out_for_now(24)
    barrier = threading.Barrier(len(clients))
    positions: list[int] = []
    lock = threading.Lock()

    def run(client: APIClient) -> None:
        try:
            barrier.wait()
            response = client.post(f"/api/flash-sales/{product.sku}/queue")
            with lock:
                positions.append(response.json()["position"] if response.status_code == 201 else -1)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(positions) == list(range(1, len(clients) + 1))


def test_returned_token_admits_the_head_and_nobody_jumps_ahead(stripe_emulator):
    product, holder, checkout_id, [first, second, outsider] = sold_out_for_now(3)
    t_first, t_second = join(first, product), join(second, product)

    assert holder.post(f"/api/checkout/{checkout_id}/cancel").status_code == 200  # the token comes back
    assert flash_pool_state(product_id=product.id).free == 1

    head = poll(first, t_first).json()
    assert (head["position"], head["admitted"]) == (1, True)
    assert poll(second, t_second).json()["admitted"] is False
    # Neither a buyer without a ticket nor the second ticket can take the unit the head is admitted to.
    blocked = start(outsider)
    assert blocked.status_code == 429 and blocked.json()["code"] == "flash_sale_busy"
    assert start(second, t_second["ticket"]).status_code == 429
    # The head starts with its ticket: admitted, the ticket is used up, the second moves to the front.
    admitted = start(first, t_first["ticket"])
    assert admitted.status_code == 201, admitted.content
    used = poll(first, t_first)
    assert used.status_code == 404 and used.json()["code"] == "flash_ticket_not_found"
    assert poll(second, t_second).json()["position"] == 1
    assert flash_queue_length(product_id=product.id) == 1
    invariants_hold()


def test_ticket_in_body_field_works_like_the_header(stripe_emulator):
    product, holder, checkout_id, [late] = sold_out_for_now(1)
    ticket = join(late, product)["ticket"]
    assert holder.post(f"/api/checkout/{checkout_id}/cancel").status_code == 200
    response = late.post("/api/checkout/start", {"flashTicket": ticket}, format="json")
    assert response.status_code == 201, response.content


def test_an_admitted_ticket_that_does_not_start_in_time_loses_its_place(stripe_emulator, settings):
    settings.CARTFLOW_FLASH_QUEUE_ADMIT_SECONDS = 30
    product, holder, checkout_id, [slow, next_in_line] = sold_out_for_now(2)
    t_slow, t_next = join(slow, product), join(next_in_line, product)
    assert holder.post(f"/api/checkout/{checkout_id}/cancel").status_code == 200
    assert poll(slow, t_slow).json()["admitted"] is True
    assert poll(next_in_line, t_next).json()["admitted"] is False

    age(t_slow, "admitted", 31)  # its admission window passes without a start
    promoted = poll(next_in_line, t_next).json()
    assert (promoted["position"], promoted["admitted"]) == (1, True)
    lost = poll(slow, t_slow)
    assert lost.status_code == 404 and lost.json()["code"] == "flash_ticket_not_found"
    # The lapsed ticket no longer lets its holder in ahead of the queue.
    assert start(slow, t_slow["ticket"]).status_code == 429
    assert start(next_in_line, t_next["ticket"]).status_code == 201
    assert CheckoutSaga.objects.filter(state="awaiting_payment").count() == 1


def test_a_waiting_ticket_never_polled_is_dropped_when_it_reaches_the_head(stripe_emulator, settings):
    settings.CARTFLOW_FLASH_QUEUE_POLL_SECONDS = 30
    product, holder, checkout_id, [gone, present] = sold_out_for_now(2)
    t_gone, t_present = join(gone, product), join(present, product)
    age(t_gone, "seen", 31)  # its tab was closed: not polled for longer than the window
    assert poll(present, t_present).json()["admitted"] is False  # no free token yet: nobody is dropped
    assert holder.post(f"/api/checkout/{checkout_id}/cancel").status_code == 200
    head = poll(present, t_present).json()
    assert (head["position"], head["admitted"]) == (1, True)
    assert poll(gone, t_gone).status_code == 404


def test_queue_problems(stripe_emulator):
    client = APIClient()
    unknown = client.post("/api/flash-sales/NO-SUCH-SKU/queue")
    assert unknown.status_code == 404 and unknown.json()["code"] == "product_not_found"
    assert unknown["Content-Type"] == "application/problem+json"

    plain = make_product(on_hand=3)
    inactive = client.post(f"/api/flash-sales/{plain.sku}/queue")
    assert inactive.status_code == 409 and inactive.json()["code"] == "flash_sale_not_active"
    assert inactive.json()["productId"] == plain.id

    empty = make_product(on_hand=0)
    flash_sale_start(product_id=empty.id)
    client = guest_with_cart((plain, 1))  # joining needs a cart
    sold_out = client.post(f"/api/flash-sales/{empty.sku}/queue")
    assert sold_out.status_code == 409 and sold_out.json()["code"] == "sold_out"

    live = make_product(on_hand=1)
    flash_sale_start(product_id=live.id)
    missing = client.get(f"/api/flash-sales/{live.sku}/queue/not-a-ticket")
    assert missing.status_code == 404 and missing.json()["code"] == "flash_ticket_not_found"


def test_polling_costs_no_database_query(stripe_emulator, django_assert_num_queries):
    product, _, _, [client] = sold_out_for_now(1)
    joined = join(client, product)
    with django_assert_num_queries(0):
        assert poll(client, joined).status_code == 200


def test_the_sweeper_beat_drops_lapsed_tickets_when_nobody_polls(stripe_emulator, settings):
    from inventory.tasks import flash_pool_sweep

    settings.CARTFLOW_FLASH_QUEUE_ADMIT_SECONDS = 30
    product, holder, checkout_id, [quiet, outsider] = sold_out_for_now(2)
    t_quiet = join(quiet, product)
    assert holder.post(f"/api/checkout/{checkout_id}/cancel").status_code == 200
    assert start(outsider).status_code == 429  # the free unit is the queued ticket's
    flash_pool_sweep()  # admits the head (its window starts now)
    age(t_quiet, "admitted", 31)
    flash_pool_sweep()  # the window lapsed with nobody starting: the place is given up
    assert flash_queue_length(product_id=product.id) == 0
    assert start(outsider).status_code == 201


def test_a_ticket_belongs_to_the_cart_that_joined(stripe_emulator):
    product, holder, checkout_id, [mine, other] = sold_out_for_now(2)
    ticket = join(mine, product)
    assert holder.post(f"/api/checkout/{checkout_id}/cancel").status_code == 200  # my ticket is admitted
    # Another cart can neither follow my ticket nor start a checkout with it.
    peeked = poll(other, ticket)
    assert peeked.status_code == 404 and peeked.json()["code"] == "flash_ticket_not_found"
    stolen = start(other, ticket["ticket"])
    assert stolen.status_code == 404, stolen.content
    assert stolen.json()["code"] == "flash_ticket_not_found"
    assert (
        flash_pool_state(product_id=product.id).free == 1
        and not CheckoutSaga.objects.filter(state="awaiting_payment").exists()
    )
    # The cart that joined still can.
    assert poll(mine, ticket).json()["admitted"] is True
    assert start(mine, ticket["ticket"]).status_code == 201


def test_joining_the_queue_needs_a_cart(stripe_emulator):
    product, _, _, _ = sold_out_for_now(0)
    no_cart = APIClient().post(f"/api/flash-sales/{product.sku}/queue")
    assert no_cart.status_code == 409 and no_cart.json()["code"] == "cart_empty", no_cart.content
    assert "no cart token was sent" in no_cart.json()["detail"] and no_cart.json()["cartTokenSent"] is False
    empty = APIClient(HTTP_X_CART_TOKEN="e" * 43).post(f"/api/flash-sales/{product.sku}/queue")
    assert empty.status_code == 409 and empty.json()["code"] == "cart_empty", empty.content
    assert empty.json()["cartTokenSent"] is True
    assert flash_queue_length(product_id=product.id) == 0
