"""The ``localstripe_server`` fixture starts the third-party emulator the gateway's tests also run against."""

from __future__ import annotations

import stripe


def test_localstripe_fixture_serves_create_confirm_and_refund(localstripe_server):
    client = stripe.StripeClient("sk_test_cartflow", base_addresses={"api": localstripe_server})
    # localstripe has no pm_card_* shortcuts: PaymentMethods are made from test card numbers, and
    # confirm does not take payment_method, so it is given at creation.
    pm = client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    )
    pi = client.v1.payment_intents.create(
        params={"amount": 1000, "currency": "usd", "payment_method": pm.id, "metadata": {"order_id": "1"}}
    )
    assert pi.status == "requires_confirmation"
    assert client.v1.payment_intents.confirm(pi.id).status == "succeeded"
    refund = client.v1.refunds.create(params={"payment_intent": pi.id})
    assert (refund.status, refund.amount) == ("succeeded", 1000)
