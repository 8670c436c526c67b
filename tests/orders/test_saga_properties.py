"""Property-based (hypothesis stateful) tests of the checkout saga: random interleavings of start, confirm
(good cards, declines, 3-D Secure), authenticate, cancel, expire, the expiry sweep, webhooks (redelivered,
reordered), recovery and fulfilment, for a few carts on a small stock — calling the services (not HTTP)
against the real PostgreSQL, Redis and the Stripe emulator.

After every step: ``check_invariants`` is clean, stock is never oversold, at most one PaymentIntent per
order succeeded (and no order has two intents), and no terminal saga holds a HELD reservation. At the end
of each run everything is driven to a terminal state and the money must add up: a charge that is not
refunded belongs to a confirmed order, and every confirmed order was charged exactly once.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from datetime import timedelta
from typing import Any

import pytest
import redis as redis_lib
import stripe
from django.apps import apps
from django.conf import settings
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from cart.identity import cart_ref_for_token, token_new
from cart.services import cart_item_add
from cartflow.invariants import run_all
from inventory.errors import InsufficientStock, InventoryContention
from inventory.models import Product, Reservation, Stock
from inventory.services import reservations_release_expired
from orders.errors import (
    CartEmpty,
    CheckoutInProgress,
    CheckoutNotCancellable,
    CheckoutNotConfirmable,
    CheckoutNotFound,
    PaymentDeclined,
    ReservationExpired,
)
from orders.models import CheckoutSaga, Order
from orders.saga.driver import checkout_cancel, checkout_confirm, checkout_payment_intent, checkout_start, saga_recover
from orders.services import outbox_process_pending
from payments.errors import PaymentMethodInvalid, PaymentTransientError
from payments.hooks import NotKnownYet
from payments.webhooks.handlers import webhook_event_process
from payments.webhooks.intake import webhook_event_receive
from stripe_emulator.webhooks import sign

pytestmark = pytest.mark.django_db(transaction=True)

ON_HAND = {"A": 3, "B": 2}
CARDS = [
    "pm_card_visa",
    "pm_card_visa",
    "pm_card_amex",
    "pm_card_mastercard",
    "pm_card_visa_chargeDeclined",
    "pm_card_visa_chargeDeclinedInsufficientFunds",
    "pm_card_threeDSecure2Required",
    "pm_card_unknown",  # Stripe refuses it: payment_method_invalid, not a decline
]
EXPECTED = (
    CartEmpty,
    CheckoutInProgress,
    CheckoutNotCancellable,
    CheckoutNotConfirmable,
    CheckoutNotFound,
    InsufficientStock,
    InventoryContention,
    PaymentDeclined,
    PaymentMethodInvalid,
    ReservationExpired,
)
OUTCOMES: Counter[str] = Counter()
STATS: Counter[str] = Counter()  # final states seen (printed with -s), to show the runs reach every end
TERMINAL = ("fulfilled", "failed", "expired", "cancelled")


def _reset_world(emulator) -> None:  # noqa: ANN001
    """A clean slate per example: the apps' tables, the cache/cart Redis DB, the emulator."""
    tables = [
        model._meta.db_table
        for label in ("inventory", "orders", "payments", "cartflow")
        for model in apps.get_app_config(label).get_models()
        if model._meta.managed
    ]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(connection.ops.quote_name(t) for t in tables)} CASCADE")
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    client.close()
    emulator.reset()


class CheckoutMachine(RuleBasedStateMachine):
    checkouts = Bundle("checkouts")
    emulator: Any = None  # the stripe_emulator handle, set by the test

    def __init__(self) -> None:
        super().__init__()
        _reset_world(self.emulator)
        self.products = {}
        for sku, on_hand in ON_HAND.items():
            product = Product.objects.create(sku=f"PROP-{sku}", name=sku, price=700, currency="usd")
            Stock.objects.create(product=product, on_hand=on_hand)
            self.products[sku] = product
        self.carts: list[str] = []
        self.delivered: set[str] = set()

    @initialize(
        carts=st.lists(
            st.dictionaries(st.sampled_from(sorted(ON_HAND)), st.integers(1, 2), min_size=1, max_size=2),
            min_size=2,
            max_size=3,
        )
    )
    def fill_carts(self, carts: list[dict[str, int]]) -> None:
        for lines in carts:
            key = cart_ref_for_token(token_new()).key
            for sku, quantity in sorted(lines.items()):
                cart_item_add(key=key, product_id=self.products[sku].pk, quantity=quantity)
            self.carts.append(key)

    # --- helpers ---

    def _get(self, saga_id: int) -> CheckoutSaga:
        return CheckoutSaga.objects.get(pk=saga_id)

    def _saga(self, cart: int) -> CheckoutSaga | None:
        return CheckoutSaga.objects.filter(cart_key=self.carts[cart % len(self.carts)]).order_by("-pk").first()

    def _run(self, fn, **kwargs: Any) -> None:  # noqa: ANN001
        try:
            fn(**kwargs)
            OUTCOMES[f"{fn.__name__}:ok"] += 1
        except EXPECTED as exc:
            OUTCOMES[f"{fn.__name__}:{exc.__class__.__name__}"] += 1
        except PaymentTransientError:
            OUTCOMES[f"{fn.__name__}:transient"] += (
                1  # outcome unknown: the step is indeterminate, recovery or a webhook settles it
            )

    # --- rules ---

    @rule(target=checkouts, cart=st.integers(0, 2))
    def start(self, cart: int):  # noqa: ANN201 - a bundle value or multiple()
        self._run(checkout_start, cart_key=self.carts[cart % len(self.carts)])
        saga = self._saga(cart)
        return saga.pk if saga is not None else multiple()

    @rule(saga_id=checkouts, card=st.sampled_from(CARDS))
    def confirm(self, saga_id: int, card: str) -> None:
        self._run(checkout_confirm, saga_id=saga_id, payment_method=card)

    @rule(saga_id=checkouts)
    def ask_for_intent(self, saga_id: int) -> None:
        """A Stripe.js storefront asks for the order's one PaymentIntent (``/payment-intent``)."""
        self._run(checkout_payment_intent, saga_id=saga_id)

    @rule(saga_id=checkouts, card=st.sampled_from(CARDS[:-1]))
    def pay_on_client(self, saga_id: int, card: str) -> None:
        """Stripe.js confirms the intent in the browser: only a webhook or recovery tells us."""
        saga = self._get(saga_id)
        if saga.payment_intent_id:
            try:
                intents = self.emulator.client().v1.payment_intents
                intents.confirm(saga.payment_intent_id, params={"payment_method": card})
            except stripe.StripeError:
                pass  # a decline, or the intent is not confirmable any more: Stripe.js shows it to the buyer

    @rule(saga_id=checkouts, outcome=st.sampled_from(["succeed", "succeed", "fail"]))
    def authenticate(self, saga_id: int, outcome: str) -> None:
        """The buyer finishes (or fails) 3-D Secure in the browser; only a webhook or recovery tells us."""
        saga = self._get(saga_id)
        if saga.payment_intent_id:
            with self.emulator.server.state.lock:
                status = self.emulator.server.state.payment_intents[saga.payment_intent_id]["status"]
            if status == "requires_action":
                self.emulator.authenticate(saga.payment_intent_id, outcome)

    @rule(saga_id=checkouts)
    def cancel(self, saga_id: int) -> None:
        self._run(checkout_cancel, saga_id=saga_id)

    @rule(saga_id=checkouts, lapse=st.sampled_from(["no", "no", "just", "long"]), sweep=st.booleans())
    def expire(self, saga_id: int, lapse: str, sweep: bool) -> None:
        """The hold's time runs out: ``just`` now, or ``long`` ago (past 3-D Secure's grace too); then maybe
        the expiry sweep runs. Most of the time nothing lapses, so that checkouts also get paid."""
        saga = self._get(saga_id)
        if lapse != "no":
            _lapse(holders=[saga.public_id], long=lapse == "long")
        if sweep or lapse == "long":  # in that long a time the beat sweep has run, surely
            reservations_release_expired()

    @rule(data=st.data())
    def webhooks(self, data: st.DataObject) -> None:
        """Deliver Stripe's events: the new ones plus some already delivered, in a random order."""
        events = self.emulator.events()
        if not events:
            return
        fresh = [e for e in events if e["id"] not in self.delivered]
        again = data.draw(st.lists(st.sampled_from(events), max_size=3), label="redeliver")
        batch = data.draw(st.permutations(fresh + again), label="order")
        for event in batch:
            payload = json.dumps(event)
            signature = sign(payload, self.emulator.secret, int(time.time()))
            stored = webhook_event_receive(payload=payload.encode(), signature=signature)
            self.delivered.add(event["id"])
            try:
                webhook_event_process(event_id=stored.event_id)
            except (NotKnownYet, PaymentTransientError, CheckoutInProgress):
                pass  # left "received": the Celery task would retry it

    @rule(
        fault=st.sampled_from(
            [
                ("POST /v1/payment_intents", "lose_response"),
                ("POST /v1/payment_intents", "http_500"),
                ("POST /v1/payment_intents/*/confirm", "lose_response"),
                ("POST /v1/payment_intents/*/confirm", "http_500"),
                ("POST /v1/payment_intents/*/cancel", "http_500"),
                ("GET /v1/payment_intents/*", "http_500"),
                ("POST /v1/refunds", "lose_response"),
            ]
        )
    )
    def stripe_fails_once(self, fault: tuple[str, str]) -> None:
        """The next matching Stripe call fails (lost response, 500); the client does not retry."""
        self.emulator.add_fault(fault[0], fault[1])

    @rule(look_ahead=st.booleans())
    def recover(self, look_ahead: bool) -> None:
        saga_recover(now=timezone.now() + timedelta(seconds=120) if look_ahead else None)

    @rule()
    def fulfil(self) -> None:
        outbox_process_pending()

    # --- invariants after every step ---

    @invariant()
    def invariants_hold(self) -> None:
        violations = {name: found for name, found in run_all().items() if found}
        assert not violations, violations

    @invariant()
    def stock_never_oversold(self) -> None:
        sold = defaultdict(int)
        for pid, qty in Reservation.objects.filter(status="COMMITTED").values_list("product_id", "quantity"):
            sold[pid] += qty
        held = defaultdict(int)
        for pid, qty in Reservation.objects.filter(status="HELD").values_list("product_id", "quantity"):
            held[pid] += qty
        for sku, product in self.products.items():
            row = Stock.objects.get(product=product)
            assert 0 <= row.reserved <= row.on_hand, (sku, row.on_hand, row.reserved)
            assert row.on_hand + sold[product.pk] == ON_HAND[sku], (sku, row.on_hand, sold[product.pk])
            assert row.reserved == held[product.pk], (sku, row.reserved, held[product.pk])

    @invariant()
    def one_intent_and_at_most_one_success_per_order(self) -> None:
        intents: dict[str, list[str]] = defaultdict(list)
        with self.emulator.server.state.lock:
            for pi in self.emulator.server.state.payment_intents.values():
                intents[pi["metadata"].get("order_id", "")].append(pi["status"])
        for order_id, statuses in intents.items():
            assert len(statuses) == 1, (order_id, statuses)
            assert statuses.count("succeeded") <= 1

    @invariant()
    def terminal_sagas_hold_nothing(self) -> None:
        terminal = CheckoutSaga.objects.filter(state__in=TERMINAL).values_list("public_id", flat=True)
        assert not Reservation.objects.filter(holder__in=list(terminal), status="HELD").exists()

    def teardown(self) -> None:
        """Drive every saga to its end (webhooks, recovery, expiry, fulfilment), then the money adds up."""
        self.emulator.clear_faults()
        for _ in range(3):
            for event in self.emulator.events():
                payload = json.dumps(event)
                signature = sign(payload, self.emulator.secret, int(time.time()))
                stored = webhook_event_receive(payload=payload.encode(), signature=signature)
                try:
                    webhook_event_process(event_id=stored.event_id)
                except (NotKnownYet, PaymentTransientError, CheckoutInProgress):
                    pass
            _lapse(holders=None, long=True)
            reservations_release_expired()
            saga_recover(now=timezone.now() + timedelta(days=1))
            outbox_process_pending()
        states = dict(CheckoutSaga.objects.values_list("public_id", "state"))
        STATS.update(states.values())
        assert set(states.values()) <= set(TERMINAL), states
        self.invariants_hold()
        self.stock_never_oversold()
        self.terminal_sagas_hold_nothing()
        with self.emulator.server.state.lock:
            intents = {
                pi["metadata"].get("order_id"): (pi["status"], pi["amount"], _refunded(self.emulator, pi))
                for pi in self.emulator.server.state.payment_intents.values()
            }
        for order in Order.objects.all():
            status, amount, refunded = intents.get(order.public_id, ("none", 0, 0))
            kept = amount - refunded if status == "succeeded" else 0
            if order.status == "fulfilled":
                assert kept == amount == order.total, (order.public_id, status, amount, refunded)
            else:
                assert kept == 0, (order.public_id, order.status, status, amount, refunded)


def _lapse(*, holders: list[str] | None, long: bool) -> None:
    """Move holds (and their sagas' expiry) into the past, as if the time had passed."""
    ago = 1 + (settings.CARTFLOW_RESERVATION_TTL_SECONDS + 60 if long else 0)
    past = timezone.now() - timedelta(seconds=ago)
    held = Reservation.objects.filter(status="HELD")
    sagas = CheckoutSaga.objects.filter(expires_at__isnull=False).exclude(state__in=TERMINAL)
    if holders is not None:
        held, sagas = held.filter(holder__in=holders), sagas.filter(public_id__in=holders)
    held.update(expires_at=past)
    sagas.update(expires_at=past)


def _refunded(emulator, pi: dict[str, Any]) -> int:  # noqa: ANN001
    charge = emulator.server.state.charges.get(pi.get("latest_charge") or "")
    return charge.get("amount_refunded", 0) if charge else 0


def test_random_interleavings_keep_the_invariants(stripe_emulator, settings):
    settings.STRIPE_MAX_NETWORK_RETRIES = 0  # an injected fault reaches the saga instead of a quiet retry
    CheckoutMachine.emulator = stripe_emulator
    run_state_machine_as_test(
        CheckoutMachine,
        settings=hsettings(
            max_examples=int(os.environ.get("CARTFLOW_PROPERTY_EXAMPLES", "15")),
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=False,
        ),
    )
    print("final saga states:", dict(STATS))
    print("outcomes:", dict(OUTCOMES))


# --- regressions the machine found, pinned down ------------------------------------------------------------


def test_abandoned_three_d_secure_gives_the_stock_back_after_one_grace_period(stripe_emulator):
    """A PaymentIntent in requires_action never expires at Stripe; the sweep kept extending its hold for ever
    (found by the machine: a saga still in requires_action after every sweep and recovery)."""
    product = Product.objects.create(sku="PROP-3DS", name="3DS", price=700, currency="usd")
    Stock.objects.create(product=product, on_hand=1)
    key = cart_ref_for_token(token_new()).key
    cart_item_add(key=key, product_id=product.pk, quantity=1)
    saga, _ = checkout_start(cart_key=key)
    assert checkout_confirm(saga_id=saga.pk, payment_method="pm_card_threeDSecure2Required").state == "requires_action"

    _lapse(holders=[saga.public_id], long=False)  # just expired: 3-D Secure keeps the hold a while longer
    assert reservations_release_expired() == []
    assert CheckoutSaga.objects.get(pk=saga.pk).state == "requires_action"
    assert Stock.objects.get(product=product).reserved == 1

    _lapse(holders=[saga.public_id], long=True)  # the grace is over too: the buyer walked away
    assert reservations_release_expired() == [saga.public_id]
    saga.refresh_from_db()
    assert saga.state == "expired" and Stock.objects.get(product=product).reserved == 0
    with stripe_emulator.server.state.lock:
        assert stripe_emulator.server.state.payment_intents[saga.payment_intent_id]["status"] == "canceled"
    assert not {name: found for name, found in run_all().items() if found}
