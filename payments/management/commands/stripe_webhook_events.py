"""``manage.py stripe_webhook_events``: the event types CartFlow handles, comma-separated.

For scripts that configure a webhook endpoint (scripts/run.sh passes it to the emulator as
``STRIPE_WEBHOOK_EVENTS``; with real Stripe, give the same list to the endpoint's enabled_events).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from payments.webhooks.handlers import HANDLED_EVENT_TYPES


class Command(BaseCommand):
    help = "Print the Stripe event types CartFlow handles, comma-separated (a webhook endpoint's enabled_events)."

    def handle(self, *args: object, **options: object) -> None:
        self.stdout.write(",".join(HANDLED_EVENT_TYPES))
