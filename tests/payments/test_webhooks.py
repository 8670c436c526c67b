"""Webhook intake (verify, store once, 200) and processing (re-fetch, converge, retry, park)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from payments.gateway import payment_intent_confirm, payment_intent_create
from payments.hooks import NotKnownYet, register_intent_listener, unregister_intent_listener
from payments.models import Payment, WebhookEvent
from payments.selectors import payment_get
from payments.tasks import process_webhook_event
from payments.webhooks.handlers import HANDLED_EVENT_TYPES, webhook_event_process
from stripe_emulator import sign

URL = "/api/webhooks/stripe"
SECRET = "whsec_test_intake"


@pytest.fixture(autouse=True)
def _only_this_tests_listeners():
    """The orders app registers its saga listener; these tests are about payments alone (its own tests cover
    the saga), so each test starts with no listener and registers its own."""
    from payments import hooks

    saved, saved_settled = list(hooks._LISTENERS), dict(hooks._SETTLED)
    hooks._LISTENERS.clear()
    yield
    hooks._LISTENERS[:] = saved
    hooks._SETTLED.clear()
    hooks._SETTLED.update(saved_settled)


def _event(type_: str = "payment_intent.succeeded", intent_id: str = "pi_123", **extra) -> dict:
    return {
        "id": f"evt_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": type_,
        "created": int(time.time()),
        "data": {"object": {"id": intent_id, "object": "payment_intent", **extra}},
    }


def _post(client, body: str | bytes, *, secret: str | None = SECRET, timestamp: int | None = None, header=None):
    text = body.decode() if isinstance(body, bytes) else body
    headers = {}
    if header is not None:
        headers["HTTP_STRIPE_SIGNATURE"] = header
    elif secret is not None:
        headers["HTTP_STRIPE_SIGNATURE"] = sign(text, secret, timestamp or int(time.time()))
    return client.post(URL, data=body, content_type="application/json", **headers)


@pytest.fixture
def webhook_secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    return SECRET


# --- intake ---


@pytest.mark.django_db
@pytest.mark.parametrize(
    "how",
    ["wrong_secret", "missing", "stale", "tampered", "garbage_header"],
)
def test_an_unverifiable_delivery_is_refused_and_nothing_is_stored(api_client, webhook_secret, how):
    body = json.dumps(_event())
    if how == "wrong_secret":
        resp = _post(api_client, body, secret="whsec_someone_else")
    elif how == "missing":
        resp = _post(api_client, body, secret=None)
    elif how == "stale":
        resp = _post(api_client, body, timestamp=int(time.time()) - 301)
    elif how == "tampered":
        resp = _post(api_client, body, header=sign(body.replace("pi_123", "pi_999"), SECRET, int(time.time())))
    else:
        resp = _post(api_client, body, header="nonsense")
    assert resp.status_code == 400
    assert resp["Content-Type"] == "application/problem+json"
    assert resp.json()["code"] == "webhook_signature_invalid"
    assert WebhookEvent.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    ["not json at all", json.dumps({"id": "evt_1", "object": "charge"}), json.dumps([1, 2]), "\xff"],
)
def test_a_signed_body_that_is_not_an_event_is_malformed(api_client, webhook_secret, body):
    resp = _post(api_client, body)
    assert resp.status_code == 400
    assert resp.json()["code"] == "malformed_event"
    assert WebhookEvent.objects.count() == 0


def _with(event: dict, **changes) -> dict:  # noqa: ANN003
    """The event with top-level members (``id``, ``type``) or, as ``intent``, its PaymentIntent id replaced."""
    if "intent" in changes:
        event["data"]["object"]["id"] = changes.pop("intent")
    return {**event, **changes}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "changes",
    [
        {"id": "evt_" + "x" * 300},
        {"id": "evt_\u0000nul"},
        {"id": 12345},
        {"type": "payment_intent." + "x" * 120},
        {"type": {"nested": "object"}},
        {"intent": "pi_" + "x" * 300},
        {"intent": "pi_\u0000nul"},
        {"intent": ["pi_1"]},
    ],
    ids=["long id", "nul id", "numeric id", "long type", "object type", "long intent", "nul intent", "list intent"],
)
def test_a_signed_event_whose_fields_do_not_fit_is_refused_cleanly(api_client, webhook_secret, changes):
    """Signed with our secret but unlike anything Stripe sends: a 400 problem, never a failed INSERT (500)."""
    body = json.dumps(_with(_event(), **changes))  # a NUL leaves json.dumps as the escape \u0000
    resp = _post(api_client, body)
    assert resp.status_code == 400, resp.content
    assert resp.json()["code"] == "malformed_event"
    assert WebhookEvent.objects.count() == 0


@pytest.mark.django_db
def test_a_valid_event_is_stored_once_answered_200_and_enqueued_after_commit(
    api_client, webhook_secret, django_capture_on_commit_callbacks
):
    body = json.dumps(_event())
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = _post(api_client, body)
        second = _post(api_client, body)  # Stripe redelivers: same id
    assert (first.status_code, first.json()) == (200, {"received": True})
    assert second.status_code == 200
    stored = WebhookEvent.objects.get()
    assert (stored.type, stored.status, stored.intent_id, stored.payload) == (
        "payment_intent.succeeded",
        "received",
        "pi_123",
        body,
    )
    assert len(callbacks) == 2  # still pending, so the redelivery enqueues it again (processing is idempotent)


@pytest.mark.django_db
def test_any_of_several_secrets_is_accepted_during_a_rotation(api_client, settings):
    settings.STRIPE_WEBHOOK_SECRET = "whsec_old, whsec_new"
    assert _post(api_client, json.dumps(_event()), secret="whsec_old").status_code == 200
    assert _post(api_client, json.dumps(_event()), secret="whsec_new").status_code == 200
    assert _post(api_client, json.dumps(_event()), secret="whsec_other").status_code == 400
    assert WebhookEvent.objects.count() == 2


@pytest.mark.django_db
def test_the_endpoint_needs_no_csrf_token_even_with_a_session(webhook_secret, django_user_model):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_user("staff", password="x"))
    assert _post(client, json.dumps(_event())).status_code == 200


@pytest.mark.django_db
def test_unknown_event_types_are_ignored(api_client, webhook_secret):
    event = _event("customer.created")
    _post(api_client, json.dumps(event))
    assert webhook_event_process(event_id=event["id"]).status == "ignored"


def test_the_handled_types_as_enabled_events_deliver_a_payments_outcome_and_not_its_steps(stripe_emulator):
    """`make run`, the bench stack and the e2e tests give the emulator HANDLED_EVENT_TYPES as its enabled_events:
    of a create + confirm only payment_intent.succeeded is delivered; every event is still listed."""
    stripe_emulator.set_webhook_url(None, events=HANDLED_EVENT_TYPES)
    client = stripe_emulator.client()
    intent = client.v1.payment_intents.create(params={"amount": 3000, "currency": "usd"})
    client.v1.payment_intents.confirm(intent.id, params={"payment_method": "pm_card_visa"})
    assert stripe_emulator.wait_for_webhooks()
    types = {event["id"]: event["type"] for event in stripe_emulator.events()}
    assert sorted(types.values()) == ["charge.succeeded", "payment_intent.created", "payment_intent.succeeded"]
    assert [types[delivery["event_id"]] for delivery in stripe_emulator.deliveries()] == ["payment_intent.succeeded"]


# --- processing (task functions called here; the real worker in test_payments_worker.py) ---


def _deliver_all(client, emulator, types: tuple[str, ...] | None = None, reverse: bool = False) -> list[str]:
    """Post the emulator's events (as Stripe would) and return their ids in delivery order."""
    events = [e for e in emulator.events() if types is None or e["type"] in types]
    if reverse:
        events.reverse()
    for event in events:
        assert _post(client, json.dumps(event), secret=emulator.secret).status_code == 200
    return [e["id"] for e in events]


def _paid_after_a_decline(order_id: str) -> str:
    intent = payment_intent_create(order_id=order_id, checkout_id="chk", amount=3000, currency="usd")
    payment_intent_confirm(
        order_id=order_id, intent_id=intent.intent_id, payment_method="pm_card_visa_chargeDeclined", attempt=1
    )
    payment_intent_confirm(order_id=order_id, intent_id=intent.intent_id, payment_method="pm_card_visa", attempt=2)
    return intent.intent_id


@pytest.fixture
def seen():
    calls: list[tuple[str, str, str]] = []

    def listener(intent, source):
        calls.append((intent.intent_id, intent.status, source))

    register_intent_listener(listener)
    yield calls
    unregister_intent_listener(listener)


@pytest.mark.django_db(transaction=True)
def test_events_out_of_order_and_three_times_over_converge_on_stripes_state(api_client, stripe_emulator, seen):
    order_id = "ord_conv"
    intent_id = _paid_after_a_decline(order_id)
    # The row drifts (say a webhook handler bug); the events must bring it back to Stripe's truth.
    Payment.objects.filter(order_id=order_id).update(status="requires_payment_method")
    types = ("payment_intent.succeeded", "payment_intent.payment_failed")
    ids = _deliver_all(api_client, stripe_emulator, types, reverse=True)  # succeeded first, failed last
    ids += _deliver_all(api_client, stripe_emulator, types) + _deliver_all(api_client, stripe_emulator, types)
    assert WebhookEvent.objects.count() == 2
    for event_id in ids:
        webhook_event_process(event_id=event_id)
        payment = payment_get(order_id=order_id)
        assert payment.status == "succeeded"
    assert set(WebhookEvent.objects.values_list("status", "attempts")) == {("processed", 1)}
    assert payment.intent_id == intent_id and payment.amount_refunded == 0
    # Each event was applied once; both told the listener Stripe's current state, not the payload's.
    assert seen == [(intent_id, "succeeded", "webhook")] * 2


@pytest.mark.django_db(transaction=True)
def test_an_authorization_and_its_capture_each_reach_the_payment_and_the_listener(
    api_client, stripe_emulator, settings, seen
):
    """Manual capture: ``payment_intent.amount_capturable_updated`` brings the authorization (a 3-D Secure or
    Stripe.js confirm the HTTP answer did not carry), ``payment_intent.succeeded`` later the capture."""
    settings.CARTFLOW_CAPTURE_METHOD = "manual"
    intent = payment_intent_create(order_id="ord_auth", checkout_id="chk", amount=3000, currency="usd")
    stripe_emulator.client().v1.payment_intents.confirm(intent.intent_id, params={"payment_method": "pm_card_visa"})
    [authorized] = _deliver_all(api_client, stripe_emulator, ("payment_intent.amount_capturable_updated",))
    assert webhook_event_process(event_id=authorized).status == "processed"
    assert payment_get(order_id="ord_auth").status == "requires_capture"
    stripe_emulator.client().v1.payment_intents.capture(intent.intent_id)
    [captured] = _deliver_all(api_client, stripe_emulator, ("payment_intent.succeeded",))
    assert webhook_event_process(event_id=captured).status == "processed"
    assert payment_get(order_id="ord_auth").status == "succeeded"
    assert seen == [(intent.intent_id, "requires_capture", "webhook"), (intent.intent_id, "succeeded", "webhook")]


@pytest.mark.django_db(transaction=True)
def test_a_stale_read_never_regresses_a_terminal_status(stripe_emulator):
    from dataclasses import replace

    from payments.gateway import payment_intent_retrieve
    from payments.services import payment_sync_from_intent

    order_id = "ord_stale"
    intent_id = _paid_after_a_decline(order_id)
    fresh = payment_intent_retrieve(intent_id=intent_id)
    payment_sync_from_intent(intent=replace(fresh, status="requires_payment_method"))  # an old read, applied late
    assert payment_get(order_id=order_id).status == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_refund_and_dispute_events_update_the_payment(api_client, stripe_emulator):
    order_id = "ord_refund"
    intent_id = _paid_after_a_decline(order_id)
    stripe_emulator.client().v1.refunds.create(params={"payment_intent": intent_id, "amount": 1000})
    [refunded] = _deliver_all(api_client, stripe_emulator, ("charge.refunded",))
    assert webhook_event_process(event_id=refunded).status == "processed"
    assert payment_get(order_id=order_id).amount_refunded == 1000

    dispute = _event("charge.dispute.created")
    dispute["data"]["object"] = {"id": "dp_1", "object": "dispute", "payment_intent": intent_id, "amount": 3000}
    _post(api_client, json.dumps(dispute), secret=stripe_emulator.secret)
    assert webhook_event_process(event_id=dispute["id"]).status == "processed"
    payment = payment_get(order_id=order_id)
    assert payment.disputed and payment.status == "succeeded" and payment.amount_refunded == 1000


@pytest.mark.django_db(transaction=True)
def test_an_event_for_an_order_not_known_yet_is_retried_until_it_is(api_client, stripe_emulator, settings):
    settings.CARTFLOW_WEBHOOK_MAX_RETRIES = 5
    intent_id = _paid_after_a_decline("ord_race")
    calls = []

    def saga_not_there_yet(intent, source):
        calls.append(source)
        if len(calls) < 3:
            raise NotKnownYet("no checkout for this order yet")

    register_intent_listener(saga_not_there_yet)
    try:
        [event_id] = _deliver_all(api_client, stripe_emulator, ("payment_intent.succeeded",))
        process_webhook_event.apply(args=[event_id])  # eager: the retries run at once
    finally:
        unregister_intent_listener(saga_not_there_yet)
    event = WebhookEvent.objects.get(event_id=event_id)
    assert (event.status, event.attempts, event.last_error) == ("processed", 3, "")
    assert calls == ["webhook"] * 3
    assert payment_get(order_id="ord_race").intent_id == intent_id


@pytest.mark.django_db(transaction=True)
def test_an_event_that_never_becomes_known_is_parked_then_reprocessed_by_staff(
    api_client, stripe_emulator, settings, admin_client
):
    settings.CARTFLOW_WEBHOOK_MAX_RETRIES = 2
    _paid_after_a_decline("ord_parked")

    def never(intent, source):
        raise NotKnownYet("no checkout for this order")

    register_intent_listener(never)
    try:
        [event_id] = _deliver_all(api_client, stripe_emulator, ("payment_intent.succeeded",))
        assert process_webhook_event.apply(args=[event_id]).get() == "parked"
    finally:
        unregister_intent_listener(never)
    event = WebhookEvent.objects.get(event_id=event_id)
    assert (event.status, event.attempts) == ("parked", 3)
    assert "NotKnownYet: no checkout for this order" in event.last_error

    # The admin's filter finds it; its re-process action goes through the same service.
    listing = admin_client.get("/admin/payments/webhookevent/", {"status__exact": "parked"})
    assert event_id in listing.content.decode()
    resp = admin_client.post(
        "/admin/payments/webhookevent/", {"action": "reprocess", "_selected_action": [event.pk]}, follow=True
    )
    assert resp.status_code == 200
    event.refresh_from_db()
    assert (event.status, event.last_error) == ("processed", "")


@pytest.mark.django_db(transaction=True)
def test_stripe_unavailable_while_processing_keeps_the_event_for_a_retry(api_client, stripe_emulator, settings):
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.CARTFLOW_WEBHOOK_MAX_RETRIES = 1
    _paid_after_a_decline("ord_down")
    [event_id] = _deliver_all(api_client, stripe_emulator, ("payment_intent.succeeded",))
    Payment.objects.filter(order_id="ord_down").update(status="requires_payment_method")
    stripe_emulator.add_fault("GET /v1/payment_intents/*", "http_500", times=1)
    process_webhook_event.apply(args=[event_id])  # first try: 500; the retry succeeds
    event = WebhookEvent.objects.get(event_id=event_id)
    assert (event.status, event.attempts) == ("processed", 2)
    assert payment_get(order_id="ord_down").status == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_an_event_for_a_payment_intent_that_is_not_ours_is_ignored(api_client, stripe_emulator):
    pi = stripe_emulator.client().v1.payment_intents.create(params={"amount": 100, "currency": "usd"})
    event = _event("payment_intent.canceled", pi.id)
    _post(api_client, json.dumps(event), secret=stripe_emulator.secret)
    assert webhook_event_process(event_id=event["id"]).status == "ignored"
    assert Payment.objects.count() == 0


# --- a success CartFlow has recorded and acted on already is not fetched again ---


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("listener_settled", [True, False])
def test_a_success_already_reflected_skips_the_stripe_read_only_when_every_listener_is_settled(
    api_client, stripe_emulator, listener_settled
):
    order_id = f"ord_settled_{listener_settled}"
    intent_id = _paid_after_a_decline(order_id)
    assert payment_get(order_id=order_id).status == "succeeded"
    calls: list[str] = []
    asked: list[tuple[str, str]] = []

    def listener(intent, source):
        calls.append(intent.status)

    def settled(pi: str, status: str) -> bool:
        asked.append((pi, status))
        return listener_settled

    register_intent_listener(listener, settled=settled)
    try:
        # Any re-fetch now fails: the event can only be processed if it is not fetched at all.
        stripe_emulator.add_fault("GET /v1/payment_intents/*", "http_500", times=100)
        [event_id] = _deliver_all(api_client, stripe_emulator, ("payment_intent.succeeded",))
        if listener_settled:
            assert webhook_event_process(event_id=event_id).status == "processed"
            assert calls == [] and asked == [(intent_id, "succeeded")]
        else:
            with pytest.raises(Exception) as failed:
                webhook_event_process(event_id=event_id)
            assert getattr(failed.value, "code", "") == "payment_provider_unavailable"
            assert WebhookEvent.objects.get(event_id=event_id).status == "received" and calls == []
        stripe_emulator.clear_faults()
        # A refund is never taken from the payload or skipped: it is fetched and applied.
        stripe_emulator.client().v1.refunds.create(params={"payment_intent": intent_id, "amount": 500})
        [refunded] = _deliver_all(api_client, stripe_emulator, ("charge.refunded",))
        assert webhook_event_process(event_id=refunded).status == "processed"
        assert payment_get(order_id=order_id).amount_refunded == 500 and calls[-1] == "succeeded"
    finally:
        unregister_intent_listener(listener)


@pytest.mark.django_db(transaction=True)
def test_an_authorization_already_reflected_or_captured_since_skips_the_stripe_read(
    api_client, stripe_emulator, settings
):
    settings.CARTFLOW_CAPTURE_METHOD = "manual"
    for order_id, then_captured in (("ord_held", False), ("ord_taken", True)):
        intent = payment_intent_create(order_id=order_id, checkout_id="chk", amount=3000, currency="usd")
        payment_intent_confirm(order_id=order_id, intent_id=intent.intent_id, payment_method="pm_card_visa", attempt=1)
        if then_captured:  # the capture is recorded before its authorization's event is processed
            Payment.objects.filter(order_id=order_id).update(status="succeeded")
    asked: list[str] = []
    register_intent_listener(lambda intent, source: None, settled=lambda pi, status: asked.append(status) or True)
    stripe_emulator.add_fault("GET /v1/payment_intents/*", "http_500", times=100)  # any re-fetch would fail
    for event_id in _deliver_all(api_client, stripe_emulator, ("payment_intent.amount_capturable_updated",)):
        assert webhook_event_process(event_id=event_id).status == "processed"
    assert asked == ["requires_capture", "succeeded"]


@pytest.mark.django_db(transaction=True)
def test_a_success_is_fetched_when_our_record_has_not_seen_it(api_client, stripe_emulator):
    order_id = "ord_unrecorded"
    intent_id = _paid_after_a_decline(order_id)
    Payment.objects.filter(order_id=order_id).update(status="requires_payment_method")  # say the record was lost
    register_intent_listener(lambda intent, source: None, settled=lambda pi, status: True)
    [event_id] = _deliver_all(api_client, stripe_emulator, ("payment_intent.succeeded",))
    assert webhook_event_process(event_id=event_id).status == "processed"
    payment = payment_get(order_id=order_id)
    assert payment.status == "succeeded" and payment.intent_id == intent_id
