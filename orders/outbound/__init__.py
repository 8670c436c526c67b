"""Outbound webhooks: telling the shop's own systems what happened to an order (docs/webhooks.md).

    events.py     the event types and how an event is written: in the statement (or the transaction) that
                  changes the order, so an event exists exactly when its change does
    body.py       the JSON an event is delivered as, rendered once from the order as the change left it
    signing.py    ``CartFlow-Signature`` (Stripe's scheme)
    delivery.py   fan-out to the endpoints, one attempt of one delivery, the retry schedule, re-send, sweep
    admin.py      endpoints, events and deliveries with their attempts, the re-send action

The rows (WebhookEndpoint, OutboundEvent, WebhookDelivery, WebhookDeliveryAttempt) are in orders/models.py.
Nothing here runs inside the saga but :mod:`orders.outbound.events`: the saga writes a row and hands its id to
Celery after the commit; every HTTP call is a Celery task's (orders/tasks.py).
"""
