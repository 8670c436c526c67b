from django.core.management.base import BaseCommand

from orders.saga.driver import saga_recover
from orders.services import outbox_process_pending
from payments import budget as stripe_budget


class Command(BaseCommand):
    help = "Resume or compensate checkout sagas whose process stopped mid-step; process leftover outbox events."

    def handle(self, *args, **options) -> None:
        with stripe_budget.background():  # recovery's Stripe calls yield to buyers' (payments/budget.py)
            counts = saga_recover()
            processed = outbox_process_pending()  # a fulfilment may capture an authorization
        self.stdout.write(
            f"resumed {counts['resumed']}, busy {counts['busy']}, errors {counts['errors']}; "
            f"outbox events processed {processed}"
        )
