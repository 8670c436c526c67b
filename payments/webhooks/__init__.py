"""Stripe webhooks: verify and store once (intake.py), then process in a Celery task (handlers.py).

Intake never trusts an unsigned body and stores nothing it could not verify. Handlers never trust the
event's payload either: each re-fetches the PaymentIntent from Stripe, syncs the Payment row from it and
tells the listeners (payments/hooks.py). Replaying any event, any number of times, in any order, converges
on Stripe's current state.

The two halves meet only through the task (payments/tasks.py): intake enqueues it, it calls the handlers.
"""
