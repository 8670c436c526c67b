from django.core.management.base import BaseCommand, CommandParser

from orders.cancellation import cancel_summary, order_cancel_paid
from orders.management.money import command_actor, run_operation


class Command(BaseCommand):
    help = (
        "Cancel a paid order (confirmed or fulfilled): refund what is left or void the authorization, put the "
        "stock back (unless --no-restock), order cancelled. Safe to run again. Exits 1 when refused, 75 when it "
        "should be run again to finish."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("order_id", help="the order's id (ord_…)")
        parser.add_argument("--no-restock", action="store_true", help="leave the stock as it is (goods not returned)")
        parser.add_argument("--reason", default="", help="why, kept on the order with who ran the command")

    def handle(self, *args, **options) -> None:
        done = run_operation(
            lambda: order_cancel_paid(
                order_id=options["order_id"],
                restock=not options["no_restock"],
                reason=options["reason"],
                actor=command_actor("cancel_order"),
            )
        )
        self.stdout.write(cancel_summary(done))
